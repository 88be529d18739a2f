"""The namespace under the state directory, and what happens when it changes.

Every change (upload, download, mkdir, delete, rename, metadata) goes through
here, so that each one produces dCache's inotify events (for the SSE channels)
and billing records (for Kafka) exactly once.

* Paths: a namespace path (`/data/run1/f.h5`) maps below the data directory.
  `..`/`.` segments, NUL bytes and symbolic links anywhere on the way are
  refused, so nothing outside the data directory is ever reached.
* PNFS-IDs: each file and directory gets a dCache-style id, kept in an extended
  attribute so that it follows the inode across renames.
* Uploads are written to a staging file and renamed into place when complete
  and verified: a refused or broken upload leaves nothing behind, and readers
  never see half a file. As in dCache, a new file's (empty) entry appears when
  the upload starts; an overwrite is a new file with a new PNFS-ID.
"""

from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import secrets
import select
import stat
import tempfile
import threading
import time

from . import checksums, metrics
from .auth import Identity
from .billing import UNEXPECTED_SYSTEM_EXCEPTION, Biller
from .notify import Hub, new_cookie

PNFSID_XATTR = "user.panfaas.pnfsid"
MODIFY_EVERY = 1.0   # seconds between IN_MODIFY (and IN_ACCESS) events of one transfer, as dCache rate-limits them


class Refused(Exception):
    """A request the namespace will not carry out; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def new_pnfsid() -> str:
    return "0000" + secrets.token_hex(16).upper()


def split(ns_path: str) -> tuple[str, str]:
    parent, name = posixpath.split(ns_path.rstrip("/") or "/")
    return parent or "/", name


class Namespace:
    def __init__(self, data_dir: str, staging_dir: str, hub: Hub, biller: Biller):
        self.root = os.path.realpath(data_dir)
        self.staging = os.path.realpath(staging_dir)
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(self.staging, exist_ok=True)
        self.hub = hub
        self.biller = biller
        self.pnfsid(self.root)

    # -- paths and ids ----------------------------------------------------
    def fs_path(self, ns_path: str) -> str:
        """The file path of a namespace path; Refused for traversal and symlinks."""
        parts = [p for p in ns_path.split("/") if p]
        for p in parts:
            if p in (".", "..") or "\0" in p:
                raise Refused(400, f"path traversal refused: {ns_path!r}")
        cur = self.root
        for i, p in enumerate(parts):
            cur = os.path.join(cur, p)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                return os.path.join(cur, *parts[i + 1:])
            except NotADirectoryError:
                raise Refused(409, f"{posixpath.dirname(ns_path)} is not a directory") from None
            if stat.S_ISLNK(st.st_mode):
                raise Refused(403, f"symbolic links are not served: {'/' + '/'.join(parts[:i + 1])}")
        return cur

    def ns_of(self, fs_path: str) -> str:
        rel = os.path.relpath(fs_path, self.root)
        return "/" if rel == "." else "/" + rel.replace(os.sep, "/")

    def pnfsid(self, fs_path: str, *, fresh: bool = False) -> str | None:
        """The entry's PNFS-ID (assigned on first sight); None when the entry is gone."""
        if not fresh:
            try:
                return os.getxattr(fs_path, PNFSID_XATTR).decode()
            except FileNotFoundError:
                return None
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
        value = new_pnfsid()
        try:
            os.setxattr(fs_path, PNFSID_XATTR, value.encode(),
                        0 if fresh else os.XATTR_CREATE)
            return value
        except FileExistsError:  # another thread named it first
            return os.getxattr(fs_path, PNFSID_XATTR).decode()
        except FileNotFoundError:
            return None
        except OSError:
            # No extended attributes here: device and inode survive a rename too.
            st = os.stat(fs_path)
            return f"0000{st.st_dev:08X}{st.st_ino:024X}"

    def _ids(self, ns_path: str) -> tuple[str | None, str | None]:
        parent, _ = split(ns_path)
        try:
            p_fs, fs = self.fs_path(parent), self.fs_path(ns_path)
        except Refused:
            return None, None
        return self.pnfsid(p_fs), self.pnfsid(fs)

    # -- events -----------------------------------------------------------
    def file_event(self, ns_path: str, event: str, *, is_dir: bool = False,
                   ids: tuple[str | None, str | None] | None = None) -> None:
        if not self.hub.active:
            return
        parent_id, own_id = ids or self._ids(ns_path)
        self.hub.file_event(parent_id, own_id, split(ns_path)[1], event, path=ns_path, is_dir=is_dir)
        metrics.SSE_EVENTS.inc()

    def _child_and_self(self, ns_path: str, child: str, own: str | None, *, is_dir: bool,
                        ids: tuple[str | None, str | None]) -> None:
        if not self.hub.active:
            return
        parent_id, own_id = ids
        self.hub.child(parent_id, split(ns_path)[1], child, path=ns_path, is_dir=is_dir)
        if own:
            self.hub.self_event(own_id, own, path=ns_path, is_dir=is_dir)
        metrics.SSE_EVENTS.inc()

    # -- operations -------------------------------------------------------
    def mkdir(self, ns_path: str) -> None:
        fs = self.fs_path(ns_path)
        os.mkdir(fs)
        self.pnfsid(fs, fresh=True)
        self._child_and_self(ns_path, "IN_CREATE", None, is_dir=True, ids=self._ids(ns_path))

    def remove_file(self, ident: Identity, ns_path: str) -> None:
        fs = self.fs_path(ns_path)
        ids = self._ids(ns_path)
        size = os.stat(fs).st_size
        os.unlink(fs)
        self._child_and_self(ns_path, "IN_DELETE", "IN_DELETE_SELF", is_dir=False, ids=ids)
        self.biller.remove(ident, path=ns_path, pnfsid=ids[1] or "", size=size)

    def remove_dir(self, ns_path: str) -> None:
        fs = self.fs_path(ns_path)
        ids = self._ids(ns_path)
        os.rmdir(fs)
        self._child_and_self(ns_path, "IN_DELETE", "IN_DELETE_SELF", is_dir=True, ids=ids)

    def remove_tree(self, ident: Identity, ns_path: str) -> None:
        """Delete a directory and everything below it, children first, each with its events."""
        fs = self.fs_path(ns_path)
        for dirpath, dirnames, filenames in os.walk(fs, topdown=False):
            base = self.ns_of(dirpath)
            for name in filenames:
                self.remove_file(ident, posixpath.join(base, name))
            for name in dirnames:
                child = os.path.join(dirpath, name)
                if os.path.islink(child):
                    raise Refused(403, f"symbolic links are not served: {self.ns_of(child)}")
                self.remove_dir(posixpath.join(base, name))
        self.remove_dir(ns_path)

    def rename(self, src: str, dst: str, *, is_dir: bool, do_rename) -> None:
        """Rename `src` to `dst` (by `do_rename()`); the PNFS-ID stays with the entry."""
        src_ids = self._ids(src)
        dst_parent_id = self.pnfsid(self.fs_path(split(dst)[0]))
        do_rename()
        if self.hub.active:
            cookie = new_cookie()
            self.hub.child(src_ids[0], split(src)[1], "IN_MOVED_FROM", path=src, is_dir=is_dir, cookie=cookie)
            self.hub.child(dst_parent_id, split(dst)[1], "IN_MOVED_TO", path=dst, is_dir=is_dir, cookie=cookie)
            self.hub.self_event(src_ids[1], "IN_MOVE_SELF", path=dst, is_dir=is_dir)
            metrics.SSE_EVENTS.inc()
        self.hub.moved(src, dst)

    def attrib(self, ns_path: str, *, is_dir: bool) -> None:
        self.file_event(ns_path, "IN_ATTRIB", is_dir=is_dir)

    def upload(self, ident: Identity, ns_path: str, **kw) -> Upload:
        return Upload(self, ident, ns_path, **kw)

    def download(self, ident: Identity, ns_path: str, *, size: int, expected: int,
                 client_port: int) -> Download:
        return Download(self, ident, ns_path, size=size, expected=expected, client_port=client_port)


class TrailingSum(threading.Thread):
    """Checksums a staging file while splice(2) is still filling it.

    Summed after the receive, a 1 GiB upload spends a third of its time re-reading the
    file; zlib and hashlib release the GIL, so following the splice from a thread overlaps
    the two. `advance(end)` says how far the file is written; `finish()` waits for the sum.
    """

    def __init__(self, path: str, start: int, summer: checksums.Checksummer):
        super().__init__(name="upload-checksum", daemon=True)
        self.path, self.pos, self.summer = path, start, summer
        self.end, self.done, self.error = start, False, None
        self.cond = threading.Condition()

    def advance(self, end: int, done: bool = False) -> None:
        with self.cond:
            self.end, self.done = end, self.done or done
            self.cond.notify()

    def run(self) -> None:
        buf = memoryview(bytearray(4 << 20))
        try:
            with open(self.path, "rb", buffering=0) as f:
                while True:
                    with self.cond:
                        while self.pos >= self.end and not self.done:
                            self.cond.wait()
                        end = self.end
                    if self.pos >= end:
                        return                   # done, and everything written is summed
                    n = os.preadv(f.fileno(), [buf[:min(len(buf), end - self.pos)]], self.pos)
                    if not n:
                        raise OSError(errno.EIO, f"staging file ends at {self.pos} of {end} bytes")
                    self.summer.update(buf[:n])
                    self.pos += n
        except Exception as e:  # noqa: BLE001 - reported by finish() in the request's thread
            self.error = e

    def finish(self, end: int) -> None:
        self.advance(end, done=True)
        self.join()
        if self.error:
            raise self.error


class Upload:
    """One PUT: staged, checksummed, size-limited, then renamed into place (or nothing)."""

    def __init__(self, ns: Namespace, ident: Identity, ns_path: str, *, algorithms=("adler32",),
                 max_bytes: int | None = None, expected: dict[str, str] | None = None,
                 client_port: int = 0):
        self.ns, self.ident, self.path = ns, ident, ns_path
        self.fs = ns.fs_path(ns_path)
        self.max_bytes = max_bytes
        self.expected = expected or {}
        self.client_port = client_port
        self.summer = checksums.Checksummer(tuple(algorithms) + tuple(self.expected))
        self.started = time.monotonic()
        self._last_modify = 0.0
        self.size = 0                       # bytes in the staging file
        self._trailing: TrailingSum | None = None   # sums what splice_from() moves, as it lands
        self.values: dict[str, str] = {}
        parent_fs = ns.fs_path(split(ns_path)[0])
        self.parent_id = ns.pnfsid(parent_fs)
        try:
            fd = os.open(self.fs, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            os.close(fd)
            self.created = True
            self.pnfsid = ns.pnfsid(self.fs, fresh=True)
        except FileExistsError:
            self.created = False          # an overwrite: a new file, as dCache makes it
            self.pnfsid = new_pnfsid()
        fd, self.tmp = tempfile.mkstemp(prefix=".upload-", dir=ns.staging)
        self.file = os.fdopen(fd, "wb", buffering=0)
        ids = (self.parent_id, self.pnfsid)
        if self.created:
            ns._child_and_self(ns_path, "IN_CREATE", None, is_dir=False, ids=ids)
        ns.file_event(ns_path, "IN_OPEN", ids=ids)

    def _check_size(self, more: int) -> None:
        if self.max_bytes is not None and self.size + more > self.max_bytes:
            raise Refused(403, f"upload exceeds the macaroon's max-upload of {self.max_bytes} bytes")

    def _progress(self) -> None:
        now = time.monotonic()
        if now - self._last_modify >= MODIFY_EVERY:
            self._last_modify = now
            self.ns.file_event(self.path, "IN_MODIFY", ids=(self.parent_id, self.pnfsid))

    def write(self, data: bytes | memoryview) -> None:
        if self._trailing is not None:
            raise RuntimeError("write() after splice_from()")
        self._check_size(len(data))
        self.summer.update(data)
        view = memoryview(data)
        while view:                     # a raw write may take less than it is given
            view = view[self.file.write(view):]
        self.size += len(data)
        self._progress()

    def splice_from(self, sock, count: int) -> int:
        """Move up to `count` bytes from a socket into the staging file inside the kernel.

        splice(2) through a pipe: the data never enters Python, which halves what a
        large upload costs; a TrailingSum thread checksums it from the page cache as it
        lands. Returns the bytes moved (fewer when the client stopped sending)."""
        self._check_size(count)
        if self._trailing is None:
            self._trailing = TrailingSum(self.tmp, self.size, self.summer)
            self._trailing.start()
        timeout = sock.gettimeout() or 60.0
        r, w = os.pipe()
        try:
            try:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass                    # a smaller pipe only means more calls
            out, left = self.file.fileno(), count
            while left:
                try:
                    n = os.splice(sock.fileno(), w, min(left, 1 << 20))
                except BlockingIOError:   # cheroot's sockets have a timeout, hence O_NONBLOCK
                    if not select.select([sock], [], [], timeout)[0]:
                        raise TimeoutError(f"client sent nothing for {timeout:.0f} s") from None
                    continue
                if not n:
                    break
                while n:
                    moved = os.splice(r, out, n)
                    n -= moved
                    left -= moved
                    self.size += moved
                self._trailing.advance(self.size)
                self._progress()
            return count - left
        finally:
            os.close(r)
            os.close(w)

    def _sum_spliced(self) -> None:
        if self._trailing is not None:
            self._trailing.finish(self.size)

    def commit(self) -> dict[str, str]:
        """Verify, rename into place, report; returns the checksums."""
        self.file.close()
        self._sum_spliced()
        self.values = self.summer.values()
        bad = checksums.mismatches(self.expected, self.values)
        if bad:
            want = checksums.format_values({k: self.expected[k] for k in bad})
            got = checksums.format_values({k: self.values[k] for k in bad})
            raise Refused(400, f"Checksum mismatch (expected={want}, actual={got})")
        try:
            os.setxattr(self.tmp, PNFSID_XATTR, self.pnfsid.encode())
        except OSError:
            pass    # no xattrs: the id falls back to device and inode
        checksums.store(self.tmp, self.values)
        os.chmod(self.tmp, 0o640)
        try:
            os.replace(self.tmp, self.fs)
        except FileNotFoundError:   # the placeholder's directory went away meanwhile
            raise Refused(409, f"{split(self.path)[0]} was removed during the upload") from None
        ids = (self.parent_id, self.pnfsid)
        self.ns.file_event(self.path, "IN_CLOSE_WRITE", ids=ids)
        self.ns.file_event(self.path, "IN_ATTRIB", ids=ids)
        size = self.size
        metrics.BYTES_IN.inc(size)
        self.ns.biller.transfer(self.ident, path=self.path, pnfsid=self.pnfsid, size=size, moved=size,
                                is_write=True, seconds=time.monotonic() - self.started,
                                client_port=self.client_port)
        return self.values

    def abort(self, reason: str) -> None:
        """Leave nothing behind; bill the failed transfer as dCache does."""
        if self._trailing is not None:
            self._trailing.advance(-1, done=True)   # stop the thread: the sum is moot
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
        ids = (self.parent_id, self.pnfsid)
        if self.created:
            try:
                if os.path.getsize(self.fs) == 0 and self.ns.pnfsid(self.fs) == self.pnfsid:
                    os.unlink(self.fs)
                    self.ns._child_and_self(self.path, "IN_DELETE", "IN_DELETE_SELF", is_dir=False, ids=ids)
            except OSError:
                pass
        else:
            self.ns.file_event(self.path, "IN_CLOSE_NOWRITE", ids=ids)
        self.ns.biller.transfer(self.ident, path=self.path, pnfsid=self.pnfsid, size=0,
                                moved=self.size, is_write=True,
                                seconds=time.monotonic() - self.started, client_port=self.client_port,
                                status=(UNEXPECTED_SYSTEM_EXCEPTION, reason))


class Download:
    """One GET: counts what is sent, bills it (and closes it in inotify terms) at the end.

    `size` is the file's, `expected` the bytes the response carries (less for a Range)."""

    def __init__(self, ns: Namespace, ident: Identity, ns_path: str, *, size: int,
                 expected: int, client_port: int):
        self.ns, self.ident, self.path = ns, ident, ns_path
        self.size = size
        self.expected = expected
        self.client_port = client_port
        self.sent = 0
        self.started = time.monotonic()
        self._last_access = 0.0
        self.ids = ns._ids(ns_path)
        ns.file_event(ns_path, "IN_OPEN", ids=self.ids)

    def data(self, n: int) -> None:
        self.sent += n
        now = time.monotonic()
        if now - self._last_access >= MODIFY_EVERY:
            self._last_access = now
            self.ns.file_event(self.path, "IN_ACCESS", ids=self.ids)

    def close(self) -> None:
        self.ns.file_event(self.path, "IN_CLOSE_NOWRITE", ids=self.ids)
        metrics.BYTES_OUT.inc(self.sent)
        status = (0, "") if self.sent >= self.expected else (
            UNEXPECTED_SYSTEM_EXCEPTION, "Client disconnected while proxying a download.")
        self.ns.biller.transfer(self.ident, path=self.path, pnfsid=self.ids[1] or "", size=self.size,
                                moved=self.sent, is_write=False,
                                seconds=time.monotonic() - self.started, client_port=self.client_port,
                                status=status)
