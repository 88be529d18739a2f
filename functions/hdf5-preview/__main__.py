"""hdf5-preview: a detector frame rendered to PNG, the way CrystFEL's hdfsee showed it.

Standalone OpenWhisk python action (standard library + h5py, numpy, pillow).
Called directly (`read`, `write`, ...) or from a Kafka feed trigger
(`{"messages": [{"value": {...same arguments...}}]}`), one result per message.
See README.md for the arguments.
"""

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import h5py
import numpy as np
from PIL import Image

BLOCK = 1 << 20          # bytes per HTTP Range request
MIN_IMAGE_SIDE = 64      # hdfsee: "the first 2-D dataset with both dimensions > 64"
SCALES = ("colour", "mono", "invmono")


class PreviewError(Exception):
    """A problem with the input; becomes {"error": ...} for this call only."""


def redact(url):
    """The URL without its query (the macaroon is a credential)."""
    p = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((p.scheme, p.netloc, p.path, "", ""))


def http_error(e, url):
    if isinstance(e, urllib.error.HTTPError):
        if e.code in (401, 403):
            return PreviewError(f"storage refused access to {redact(url)} (HTTP {e.code}): "
                                "the URL's macaroon is missing, expired or lacks the activity")
        if e.code == 404:
            return PreviewError(f"{redact(url)} does not exist (HTTP 404)")
        return PreviewError(f"HTTP {e.code} from {redact(url)}")
    reason = getattr(e, "reason", e)
    return PreviewError(f"cannot reach {redact(url)}: {reason}")


class HttpFile(io.RawIOBase):
    """A read-only, seekable file over HTTP Range requests, with a small block cache.

    h5py reads through it, so only the blocks holding the metadata and the
    requested frame are fetched, not the whole file.
    """

    def __init__(self, url, timeout=30):
        super().__init__()
        self.url, self.timeout = url, timeout
        self.pos = 0
        self.blocks = {}
        self.fetched = 0
        try:
            with urllib.request.urlopen(self._req("HEAD"), timeout=timeout) as r:
                self.size = int(r.headers.get("Content-Length") or 0)
                self.ranges = r.headers.get("Accept-Ranges", "").lower() == "bytes"
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise http_error(e, url) from None
        if not self.ranges:
            self._whole = self._get(None)
            self.size = len(self._whole)

    def _req(self, method, rng=None):
        req = urllib.request.Request(self.url, method=method)
        if rng:
            req.add_header("Range", f"bytes={rng[0]}-{rng[1]}")
        return req

    def _get(self, rng):
        try:
            with urllib.request.urlopen(self._req("GET", rng), timeout=self.timeout) as r:
                data = r.read()
        except (urllib.error.URLError, OSError) as e:
            raise http_error(e, self.url) from None
        self.fetched += len(data)
        return data

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        self.pos = {io.SEEK_SET: offset, io.SEEK_CUR: self.pos + offset, io.SEEK_END: self.size + offset}[whence]
        return self.pos

    def readinto(self, buf):
        n = min(len(buf), max(self.size - self.pos, 0))
        if n <= 0:
            return 0
        if not self.ranges:
            buf[:n] = self._whole[self.pos:self.pos + n]
        else:
            first, last = self.pos // BLOCK, (self.pos + n - 1) // BLOCK
            missing = [b for b in range(first, last + 1) if b not in self.blocks]
            if missing:  # one request for the whole missing run
                lo, hi = missing[0] * BLOCK, min((missing[-1] + 1) * BLOCK, self.size) - 1
                data = self._get((lo, hi))
                for b in range(missing[0], missing[-1] + 1):
                    self.blocks[b] = data[(b - missing[0]) * BLOCK:(b - missing[0] + 1) * BLOCK]
            view = memoryview(buf)
            done = 0
            while done < n:
                b, off = divmod(self.pos + done, BLOCK)
                chunk = self.blocks[b][off:off + n - done]
                view[done:done + len(chunk)] = chunk
                done += len(chunk)
        self.pos += n
        return n


def find_image(f, dataset=None):
    """The dataset to show: explicit, CXI, Cheetah, or the first big 2-D one."""
    if dataset:
        if dataset not in f:
            raise PreviewError(f"dataset {dataset} not found in the file")
        obj = f[dataset]
        if not isinstance(obj, h5py.Dataset):
            raise PreviewError(f"{dataset} is a group, not a dataset")
        return dataset, obj
    for candidate in ("/entry_1/data_1/data", "/entry_1/instrument_1/detector_1/data", "/data/data",
                      "/data/rawdata0"):
        if candidate in f and isinstance(f[candidate], h5py.Dataset):
            return candidate, f[candidate]
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 2 and min(obj.shape) > MIN_IMAGE_SIDE:
            found.append("/" + name)
            return True
        return None

    f.visititems(visit)
    if not found:
        raise PreviewError("no image in the file: no CXI or Cheetah data and no 2-D dataset larger "
                           f"than {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")
    return found[0], f[found[0]]


def read_frame(ds, frame):
    if ds.ndim == 2:
        if frame not in (None, 0):
            raise PreviewError(f"frame {frame} out of range: the dataset holds one frame")
        return ds[...], 1
    if ds.ndim == 3:
        n = ds.shape[0]
        idx = 0 if frame is None else frame
        if not 0 <= idx < n:
            raise PreviewError(f"frame {frame} out of range: the dataset holds {n} frames (0..{n - 1})")
        return ds[idx], n
    raise PreviewError(f"dataset has {ds.ndim} dimensions; expected an image (2-D) or a stack (3-D)")


def bin_image(img, b):
    if b == 1:
        return img.astype(np.float32, copy=False)
    h, w = (img.shape[0] // b) * b, (img.shape[1] // b) * b
    if h == 0 or w == 0:
        raise PreviewError(f"binning {b} is larger than the image ({img.shape[0]}x{img.shape[1]})")
    return img[:h, :w].astype(np.float32).reshape(h // b, b, w // b, b).mean(axis=(1, 3))


def colour_lut(scale, levels=1536):
    """hdfsee's render_scale() sampled at `levels`+1 points over [0, max]."""
    v = np.linspace(0.0, 1.0, levels + 1)
    if scale == "mono":
        g = v
        rgb = np.stack([g, g, g], axis=1)
    elif scale == "invmono":
        g = 1.0 - v
        rgb = np.stack([g, g, g], axis=1)
    else:
        s = np.minimum((v * 6).astype(int), 5)
        p = v * 6 - s
        z, o = np.zeros_like(p), np.ones_like(p)
        bands = [np.stack(t, axis=1) for t in (
            (z, z, p), (p, z, o), (o, z, 1 - p), (o, 0.5 * p, z), (o, 0.5 + 0.5 * p, z), (o, o, p))]
        rgb = np.choose(s[:, None], bands)
        rgb[-1] = (1.0, 1.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def render(img, binning=2, int_boost=1.0, scale="colour", log_scale=False):
    """The hdfsee algorithm: max over the whole image, boosted; b×b mean binning; colour map."""
    data = img.astype(np.float32, copy=False)
    if log_scale:
        data = np.log1p(np.clip(data, 0, None))
    vmax = float(np.max(data)) / int_boost
    if vmax <= 6:
        vmax = 10.0
    binned = bin_image(data, binning)
    levels = 1536
    lut = colour_lut(scale, levels)
    idx = np.clip(binned * (levels / vmax), 0, levels).astype(np.int32)
    if scale == "colour":
        idx[binned < 0] = 0  # below zero is black; above max is white (the last entry)
    return lut[idx]


def draw_peaks(rgb, peaks, binning, ring_size):
    """Rings (screen pixels, after binning) around peak positions given in raw (fs, ss)."""
    h, w = rgb.shape[:2]
    t = np.linspace(0, 2 * np.pi, max(16, int(2 * np.pi * ring_size)), endpoint=False)
    for fs, ss in peaks:
        cx, cy = fs / binning, ss / binning
        xs = np.round(cx + ring_size * np.cos(t)).astype(int)
        ys = np.round(cy + ring_size * np.sin(t)).astype(int)
        ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        rgb[ys[ok], xs[ok]] = (0, 255, 0)


def upload(url, body):
    req = urllib.request.Request(url, data=body, method="PUT",
                                 headers={"Content-Type": "image/png", "Content-Length": str(len(body))})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
    except (urllib.error.URLError, OSError) as e:
        raise http_error(e, url) from None


def _int(args, key, default, lo=None):
    v = args.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise PreviewError(f"'{key}' must be an integer")
    try:
        iv = int(v)
    except ValueError:
        raise PreviewError(f"'{key}' must be an integer, got {v!r}") from None
    if lo is not None and iv < lo:
        raise PreviewError(f"'{key}' must be >= {lo}, got {iv}")
    return iv


def preview(args):
    t0 = time.perf_counter()
    read_url, write_url = args.get("read"), args.get("write")
    if not isinstance(read_url, str) or not read_url:
        raise PreviewError("'read' (the URL of the HDF5/CXI file) is required")
    if not isinstance(write_url, str) or not write_url:
        raise PreviewError("'write' (the URL to PUT the PNG to) is required")
    binning = _int(args, "binning", 2, lo=1)
    frame = _int(args, "frame", None, lo=0)
    try:
        boost = float(args.get("int_boost", 1))
    except (TypeError, ValueError):
        raise PreviewError("'int_boost' must be a number") from None
    if not boost > 0:
        raise PreviewError("'int_boost' must be > 0")
    scale = args.get("scale", "colour")
    if scale == "color":
        scale = "colour"
    if scale not in SCALES:
        raise PreviewError(f"'scale' must be one of {', '.join(SCALES)}")
    ring = _int(args, "ring_size", 5, lo=1)
    src = HttpFile(read_url)
    if src.size == 0:
        raise PreviewError(f"{redact(read_url)} is empty (0 bytes)")
    t_open = time.perf_counter()
    try:
        f = h5py.File(src, "r")
    except OSError as e:
        raise PreviewError(f"{redact(read_url)} is not a readable HDF5 file ({e})") from None
    with f:
        name, ds = find_image(f, args.get("dataset"))
        try:
            img, nframes = read_frame(ds, frame)
        except OSError as e:
            raise PreviewError(f"cannot read {name}: the file is truncated or corrupt ({e})") from None
        peaks = None
        want = args.get("peaks")
        if isinstance(want, list):
            peaks = [(float(p[0]), float(p[1])) for p in want]
        elif want and "/processing/cheetah/peakinfo-raw" in f:
            peaks = [(float(r[0]), float(r[1])) for r in f["/processing/cheetah/peakinfo-raw"][...]]
    t_read = time.perf_counter()
    rgb = render(img, binning, boost, scale, bool(args.get("log", False)))
    if peaks:
        draw_peaks(rgb, peaks, binning, ring)
    out = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(out, format="PNG", compress_level=1)
    png = out.getvalue()
    t_render = time.perf_counter()
    upload(write_url, png)
    t_end = time.perf_counter()
    return {"png": redact(write_url), "source": redact(read_url), "dataset": name,
            "frame": frame or 0, "frames": nframes, "shape": list(img.shape), "dtype": str(img.dtype),
            "min": float(np.min(img)), "max": float(np.max(img)), "mean": float(np.mean(img)),
            "png_bytes": len(png), "bytes_fetched": src.fetched, "file_bytes": src.size,
            "timing": {"open": round(t_open - t0, 4), "read": round(t_read - t_open, 4),
                       "render": round(t_render - t_read, 4), "upload": round(t_end - t_render, 4),
                       "total": round(t_end - t0, 4)}}


def one(args):
    try:
        return preview(args)
    except PreviewError as e:
        return {"error": str(e)}


def main(args):
    messages = args.get("messages")
    if isinstance(messages, list):  # a Kafka feed batch: one preview per task
        results = []
        for m in messages:
            value = m.get("value") if isinstance(m, dict) else None
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    value = None
            if not isinstance(value, dict):
                results.append({"error": "message value is not a task object"})
                continue
            res = one(value)
            if isinstance(value.get("task_id"), str):
                res["task_id"] = value["task_id"]
            results.append(res)
        failed = [r for r in results if "error" in r]
        out = {"results": results, "count": len(results), "failed": len(failed)}
        if failed:
            out = {"error": failed[0]["error"] if len(failed) == 1 else
                   f"{len(failed)} of {len(results)} previews failed", **out}
        return out
    return one(args)
