"""The all-in-one storage element: behaves like a dCache instance to its clients.

* `door`: the WebDAV door (wsgidav underneath) with basic auth and dCache macaroons;
* `namespace`: the files under the state directory, PNFS-IDs, staged uploads;
* `billing`: dCache-format billing records on Kafka for every transfer and removal;
* `notify`, `sse`, `frontend`: dCache's frontend storage events (inotify over SSE);
* `checksums`: ADLER32 on upload, RFC 3230 `Want-Digest`/`Digest`, the Checksums property;
* `server`: configuration and `panfaas storage serve`.

Reference: shared/reference/dcache-events-macaroons-cxi.md; operator notes in
roles/storage_element/README.md and docs/runbooks/dcache.md.
"""

from .server import DEFAULTS, Storage, serve

__all__ = ["DEFAULTS", "Storage", "serve"]
