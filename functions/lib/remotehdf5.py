"""An HDF5 file read over HTTP Range requests, for the reference functions that open remote
HDF5/CXI files (hdf5-preview, metadata-extract): a seekable file object with a block cache for
HDF5's metadata, and h5py.File over it with h5py's errors turned into clear ones.

Shipped beside the function's code with storagehttp.py, which it uses (function.yml
`include: [lib/storagehttp.py, lib/remotehdf5.py]`; the Dockerfile copies both into /action).
Needs h5py, which those functions' images install.
"""

import io
import re

import h5py

from storagehttp import FunctionError, check, redact

MIN_IMAGE_SIDE = 64       # hdfsee: "the first 2-D dataset with both dimensions > 64"
# Where facilities put the image: CXI (data_1/data is usually a soft link to the detector's
# data), then Cheetah's single-hit files (/data/data -> /data/rawdata0).
IMAGE_PATHS = ("/entry_1/data_1/data", "/entry_1/instrument_1/detector_1/data", "/data/data",
               "/data/rawdata0")


class RemoteFile(io.RawIOBase):
    """A read-only, seekable file over HTTP Range GETs, for h5py.File(RemoteFile(...)).

    Small reads (HDF5 metadata) go through a cache of BLOCK-sized blocks; a large read (a
    frame, a chunk) is fetched exactly, straight into h5py's buffer. So opening a file and
    reading one frame of a stack transfers the metadata blocks and that frame, not the file.
    A server that ignores Range gets one plain GET of the whole file instead.
    """

    BLOCK = 128 * 1024

    def __init__(self, url, http_):
        super().__init__()
        self.url, self.http = url, http_
        self.pos, self.fetched, self.requests = 0, 0, 0
        self.blocks = {}
        self.whole = None
        resp = self._get(0, self.BLOCK - 1, ok=(200, 206, 416))
        body = self.http.read_all(resp, url)
        self.fetched += len(body)
        if resp.status == 206:
            total = (resp.getheader("Content-Range") or "").rpartition("/")[2]
            if not total.isdigit():
                raise FunctionError(f"{redact(url)}: the server's Content-Range has no file size")
            self.size = int(total)
            self.blocks[0] = body
        elif resp.status == 416:  # no byte 0: an empty file
            self.size = 0
        else:  # the server ignored Range and sent the whole file
            self.whole, self.size = body, len(body)

    def _get(self, lo, hi, ok=(206,)):
        self.requests += 1
        resp = self.http.request("GET", self.url, {"Range": f"bytes={lo}-{hi}"})
        check(self.http, resp, self.url, ok=ok)
        return resp

    def _fetch(self, lo, hi):
        resp = self._get(lo, hi)
        body = self.http.read_all(resp, self.url)
        self.fetched += len(body)
        if len(body) != hi - lo + 1:
            raise FunctionError(f"{redact(self.url)} changed or broke off while being read")
        return body

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buf):
        view = memoryview(buf).cast("B")
        n = min(len(view), max(self.size - self.pos, 0))
        if n <= 0:
            return 0
        lo, hi = self.pos, self.pos + n - 1
        if self.whole is not None:
            view[:n] = self.whole[lo:hi + 1]
        elif n >= 4 * self.BLOCK:  # bulk data: exactly what was asked for
            view[:n] = self._fetch(lo, hi)
        else:
            first, last = lo // self.BLOCK, hi // self.BLOCK
            missing = [b for b in range(first, last + 1) if b not in self.blocks]
            if missing:  # one request for the whole missing run
                a, z = missing[0], missing[-1]
                data = self._fetch(a * self.BLOCK, min((z + 1) * self.BLOCK, self.size) - 1)
                for b in range(a, z + 1):
                    self.blocks[b] = data[(b - a) * self.BLOCK:(b - a + 1) * self.BLOCK]
            done = 0
            while done < n:
                b, off = divmod(lo + done, self.BLOCK)
                piece = self.blocks[b][off:off + n - done]
                view[done:done + len(piece)] = piece
                done += len(piece)
        self.pos += n
        return n


def open_hdf5(src, url):
    """h5py.File over a RemoteFile, with h5py's errors turned into clear ones."""
    if src.size == 0:
        raise FunctionError(f"{redact(url)} is empty (0 bytes)")
    try:
        return h5py.File(src, "r")
    except OSError as e:
        msg = str(e)
        m = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", msg)
        if m:
            why = f"truncated, {m.group(1)} of the {m.group(2)} bytes its superblock declares"
        elif "signature" in msg:
            why = "no HDF5 signature, it is not HDF5 at all"
        else:
            why = msg
        raise FunctionError(f"{redact(url)} is not a readable HDF5 file: {why}") from None


def find_image(f):
    """(path, dataset) of the file's image, or (None, None): the CXI or Cheetah place first
    (a 2-D frame or an N×H×W stack), else the first 2-D dataset with both sides > 64, as
    hdfsee chose without a geometry."""
    for path in IMAGE_PATHS:
        try:
            obj = f.get(path)
        except (KeyError, OSError, ValueError):   # e.g. a dangling soft link
            obj = None
        if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3):
            return path, obj
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 2 and min(obj.shape) > MIN_IMAGE_SIDE:
            found.append("/" + name)
            return True
        return None

    f.visititems(visit)
    return (found[0], f[found[0]]) if found else (None, None)
