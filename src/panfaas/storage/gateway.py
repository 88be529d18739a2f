"""cheroot's WSGI gateway with `wsgi.file_wrapper` (PEP 3333): downloads go out by sendfile(2).

It also hands the door the connection's socket (`panfaas.socket`), so that a
large upload can move into its file by splice(2).

A door that reads each block of a file into Python and writes it to the socket
spends a CPU-second or so per GiB; sendfile moves the pages in the kernel. Any
other WSGI server still works: `FileWrapper` is an ordinary iterable too.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cheroot import wsgi

BLOCK = 1 << 20


class FileWrapper:
    """`count` bytes of `file` from `offset`; `on_close(sent)` is called once, when done."""

    def __init__(self, file, offset: int = 0, count: int | None = None,
                 on_close: Callable[[int], None] | None = None):
        self.file = file
        self.offset = offset
        self.count = os.fstat(file.fileno()).st_size - offset if count is None else count
        self.on_close = on_close
        self.sent = 0
        self._closed = False

    def __iter__(self):
        self.file.seek(self.offset)
        left = self.count
        while left > 0:
            chunk = self.file.read(min(BLOCK, left))
            if not chunk:
                break
            left -= len(chunk)
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.file.close()
        finally:
            if self.on_close:
                self.on_close(self.sent)


class Gateway(wsgi.Gateway_10):
    """WSGI 1.0 for cheroot, plus sendfile for responses that are a `FileWrapper`."""

    def get_environ(self):
        env = super().get_environ()
        env["wsgi.file_wrapper"] = FileWrapper
        env["panfaas.socket"] = self.req.conn.socket   # lets large uploads use splice(2)
        return env

    def respond(self):
        response = self.req.server.wsgi_app(self.env, self.start_response)
        try:
            if self.req.method == b"HEAD":
                # Headers only (RFC 9110 §9.3.2): a body here would be read as the next
                # response on a kept-alive connection, and cheroot does not drop it itself.
                # The iterable is still run: some apps call start_response lazily.
                if not isinstance(response, FileWrapper):
                    for _ in response:
                        pass
                return
            if isinstance(response, FileWrapper):
                self._sendfile(response)
                return
            for chunk in filter(None, response):   # as cheroot's own gateway does
                if not isinstance(chunk, bytes):
                    raise ValueError("WSGI Applications must yield bytes")
                self.write(chunk)
        finally:
            self.req.ensure_headers_sent()
            if hasattr(response, "close"):
                response.close()

    def _sendfile(self, wrapper: FileWrapper) -> None:
        self.req.ensure_headers_sent()
        if wrapper.count <= 0:
            return
        try:
            # socket.sendfile falls back to send() where sendfile(2) cannot serve (TLS).
            wrapper.sent = self.req.conn.socket.sendfile(wrapper.file, wrapper.offset, wrapper.count)
        finally:
            # On a broken connection sendfile raises; the file position says how far it got.
            if not wrapper.sent:
                wrapper.sent = max(0, wrapper.file.tell() - wrapper.offset)
            if self.remaining_bytes_out is not None:
                self.remaining_bytes_out -= wrapper.sent
