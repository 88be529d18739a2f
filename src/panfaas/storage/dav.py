"""wsgidav, adapted: the WebDAV methods the door hands to it, on our namespace.

wsgidav serves PROPFIND (depth 0 and 1), PROPPATCH, MKCOL, DELETE, MOVE,
OPTIONS and directory pages. Its filesystem resources are subclassed
so that every change goes through `Namespace` (events, billing, PNFS-IDs),
listings hide what a macaroon's path caveat hides, symlinks are refused, and
files carry dCache's `Checksums` property. Errors come back as
`{"error": ...}` JSON instead of wsgidav's HTML pages. PUT and file GET/HEAD are
the door's own (staged uploads, sendfile downloads); locking is off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import traceback

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_FORBIDDEN,
    HTTP_INTERNAL_ERROR,
    HTTP_NO_CONTENT,
    HTTP_NOT_MODIFIED,
    DAVError,
    as_DAVError,
    get_http_status_string,
)
from wsgidav.dir_browser import WsgiDavDirBrowser
from wsgidav.fs_dav_provider import FileResource, FilesystemProvider, FolderResource
from wsgidav.mw.base_mw import BaseMiddleware
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from . import checksums
from .namespace import Namespace, Refused

log = logging.getLogger("panfaas.storage.dav")

BLOCK_SIZE = 1 << 20   # wsgidav reads request bodies in blocks of this size (its default: 8 KiB)


def _identity(environ):
    return environ["panfaas.identity"]


def _ns_path(res_or_path, environ=None) -> str:
    """wsgidav works on the paths the client sees; the namespace has the root caveat applied."""
    if isinstance(res_or_path, str):
        return _identity(environ).resolve(res_or_path)
    return _identity(res_or_path.environ).resolve(res_or_path.path)


def _dav_error(e: Refused) -> DAVError:
    return DAVError(e.status, str(e))


@contextlib.contextmanager
def _refusals_as_dav_errors():
    """A namespace refusal as wsgidav's error: wsgidav answers any other exception from a
    resource with 500."""
    try:
        yield
    except Refused as e:
        raise _dav_error(e) from None


class AioFileResource(FileResource):
    def get_property_names(self, *, is_allprop):
        names = super().get_property_names(is_allprop=is_allprop)
        if not is_allprop:       # dCache lists Checksums only when asked for it by name
            names.append(checksums.PROPERTY)
        return names

    def get_property_value(self, name):
        if name == checksums.PROPERTY:
            return checksums.format_values(checksums.load(self._file_path))
        return super().get_property_value(name)

    def set_property_value(self, name, value, dry_run=False):
        super().set_property_value(name, value, dry_run=dry_run)
        if not dry_run:
            self.provider.ns.attrib(_ns_path(self), is_dir=False)

    def delete(self):
        with _refusals_as_dav_errors():
            self.provider.ns.remove_file(_identity(self.environ), _ns_path(self))
        self.remove_all_properties(recursive=True)

    def move_recursive(self, dest_path):
        with _refusals_as_dav_errors():
            self.provider.ns.rename(_ns_path(self), _ns_path(dest_path, self.environ), is_dir=False,
                                    do_rename=lambda: super(AioFileResource, self).move_recursive(dest_path))

    def begin_write(self, *, content_type=None):
        raise DAVError(HTTP_FORBIDDEN, "uploads go through the door")


class AioFolderResource(FolderResource):
    def get_member_names(self):
        ident = _identity(self.environ)
        base = _ns_path(self).rstrip("/")
        return [n for n in super().get_member_names() if ident.visible(f"{base}/{n}")]

    def support_recursive_delete(self):
        return True

    def delete(self):
        with _refusals_as_dav_errors():
            self.provider.ns.remove_tree(_identity(self.environ), _ns_path(self))
        self.remove_all_properties(recursive=True)
        return []

    def create_collection(self, name):
        with _refusals_as_dav_errors():
            self.provider.ns.mkdir(_ns_path(util.join_uri(self.path, name), self.environ))

    def create_empty_resource(self, name):
        raise DAVError(HTTP_FORBIDDEN, "uploads go through the door")

    def set_property_value(self, name, value, dry_run=False):
        super().set_property_value(name, value, dry_run=dry_run)
        if not dry_run:
            self.provider.ns.attrib(_ns_path(self), is_dir=True)

    def move_recursive(self, dest_path):
        with _refusals_as_dav_errors():
            self.provider.ns.rename(_ns_path(self), _ns_path(dest_path, self.environ), is_dir=True,
                                    do_rename=lambda: super(AioFolderResource, self).move_recursive(dest_path))


class AioProvider(FilesystemProvider):
    def __init__(self, ns: Namespace):
        super().__init__(ns.root, readonly=False, fs_opts={"follow_symlinks": False})
        self.ns = ns

    def _loc_to_file_path(self, path: str, environ: dict = None):
        with _refusals_as_dav_errors():
            return self.ns.fs_path(_ns_path(path, environ))

    def get_resource_inst(self, path: str, environ: dict):
        self._count_get_resource_inst += 1
        fp = self._loc_to_file_path(path, environ)
        if not os.path.lexists(fp):
            return None
        if os.path.isdir(fp):
            return AioFolderResource(path, environ, fp)
        if not os.path.isfile(fp):
            raise DAVError(HTTP_FORBIDDEN, "only files and directories are served")
        return AioFileResource(path, environ, fp)


class JsonErrors(BaseMiddleware):
    """wsgidav's ErrorPrinter, answering `{"error": ...}` (and XML where RFC 4918 wants a
    precondition element)."""

    def __call__(self, environ, start_response):
        sub = util.SubAppStartResponse()
        started = False
        try:
            try:
                app_iter = self.next_app(environ, sub)
                try:
                    for chunk in app_iter:
                        if not started:
                            start_response(sub.status, sub.response_headers, sub.exc_info)
                            started = True
                        yield chunk
                finally:
                    if hasattr(app_iter, "close"):
                        app_iter.close()
                if not started:
                    start_response(sub.status, sub.response_headers, sub.exc_info)
                return
            except DAVError:
                raise
            except Refused as e:
                raise _dav_error(e) from None
            except Exception as e:  # noqa: BLE001 - a 500 with the reason, the service keeps going
                log.error("request failed", extra={"fields": {"path": environ.get("PATH_INFO"),
                                                              "exc": traceback.format_exc(8)}})
                raise as_DAVError(e) from None
        except DAVError as e:
            if started:
                raise
            status = get_http_status_string(e)
            if e.value in (HTTP_NOT_MODIFIED, HTTP_NO_CONTENT):
                start_response(status, [("Content-Length", "0")])
                yield b""
                return
            if e.err_condition:
                content_type, body = e.get_response_page()
            else:
                content_type = "application/json"
                message = e.context_info or status.split(" ", 1)[-1]
                if e.value == 404 and e.context_info:
                    message = f"not found: {e.context_info}"
                if e.value == HTTP_INTERNAL_ERROR and e.src_exception:
                    message = f"internal error: {e.src_exception!r}"
                body = json.dumps({"error": message}).encode()
            start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))]
                           + (e.add_headers or []))
            yield body


def build(ns: Namespace) -> WsgiDAVApp:
    return WsgiDAVApp({
        "provider_mapping": {"/": AioProvider(ns)},
        "middleware_stack": [JsonErrors, WsgiDavDirBrowser, RequestResolver],
        "http_authenticator": {"accept_basic": False, "accept_digest": False, "default_to_digest": False},
        "simple_dc": {"user_mapping": {"*": True}},   # the door authenticates
        "verbose": 1, "logging": {"enable": False, "enable_loggers": []},
        "dir_browser": {"enable": True, "response_trailer": "panfaas all-in-one storage element"},
        "lock_storage": False, "property_manager": True,
        "block_size": BLOCK_SIZE,
        "add_header_MS_Author_Via": False,
    })
