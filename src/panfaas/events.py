"""dCache storage event formats.

Two sources describe the same thing, a change in the namespace:
* Kafka *billing* messages (pool `transfer`, door `request`, `remove`,
  `store`/`restore`, `hit`, `warning`), JSON with dCache's quirks: `isWrite`
  is the string "write"/"read", the door message spells `VERSION` in upper
  case, `hit` spells `filesize`, `date` carries the server's local offset.
* SSE inotify events from the frontend (see panfaas.storage).

`billing_*` build messages exactly as dCache serialises them; `parse_billing`
turns any of them into one `StorageEvent`. Reference:
shared/reference/dcache-events-macaroons-cxi.md §1-2.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import orjson

MAX_MESSAGE_BYTES = 1024 * 1024  # anything larger is not a billing record


class EventError(ValueError):
    """A message that is not a usable storage event; the text says why."""


def local_isodate(ts: float | None = None) -> str:
    """ISO_OFFSET_DATE_TIME in the server's zone, milliseconds: dCache's `date`."""
    now = dt.datetime.fromtimestamp(ts, dt.UTC) if ts else dt.datetime.now(dt.UTC)
    return now.astimezone().isoformat(timespec="milliseconds")


def subject_principals(user: str, uid: int, gid: int, client: str) -> list[str]:
    return [f"UidPrincipal[{uid}]", f"GidPrincipal[{gid},primary]",
            f"UserNamePrincipal[{user}]", f"Origin[{client}]", f"LoginNamePrincipal[{user}]"]


def billing_transfer(*, path: str, pnfsid: str, size: int, is_write: bool, client: str,
                     client_port: int, user: str, uid: int, gid: int, session: str,
                     transfer_ms: int, cell: str = "pool1", domain: str = "aioDomain",
                     door: str = "WebDAV-aio", storage_info: str = "aio:disk@osm",
                     status: tuple[int, str] = (0, ""), protocol: str = "Http",
                     local_endpoint: str | None = None, transfer_size: int | None = None) -> dict:
    """A pool `transfer` message (MoverInfoMessage), field for field.

    `size` is the file's size, `transfer_size` the bytes moved (less for a ranged
    or interrupted download; defaults to `size`). `path` is both billingPath and
    transferPath (the door serves the namespace as is)."""
    moved = size if transfer_size is None else transfer_size
    seconds = max(transfer_ms, 1) / 1000.0
    msg: dict[str, Any] = {
        "version": "1.0", "msgType": "transfer", "date": local_isodate(),
        "queuingTime": 0, "cellName": cell, "cellType": "pool", "cellDomain": domain,
    }
    active = f"PT{seconds:.3f}S"
    if is_write:
        msg.update(meanWriteBandwidth=moved / seconds, writeIdle="PT0S", writeActive=active)
    else:
        msg.update(meanReadBandwidth=moved / seconds, readIdle="PT0S", readActive=active)
    if local_endpoint:
        msg["localEndpoint"] = local_endpoint
    msg.update({
        "status": {"code": status[0], "msg": status[1]},
        "session": session,
        "subject": subject_principals(user, uid, gid, client),
        "pnfsid": pnfsid, "billingPath": path, "fileSize": size,
        "storageInfo": storage_info, "transferSize": moved, "transferTime": transfer_ms,
        "isWrite": "write" if is_write else "read",
        "protocolInfo": {"protocol": protocol, "versionMajor": 1, "versionMinor": 1,
                         "port": client_port, "host": client},
        "initiator": f"door:{door}@{domain}:{session.rsplit(':', 1)[-1]}",
        "isP2p": False, "transferPath": path,
    })
    return msg


_MOVER_DROP = ("subject", "pnfsid", "fileSize", "initiator", "billingPath", "storageInfo")


def billing_request(transfer: dict, *, user: str, uid: int, gid: int, client: str,
                    door: str = "WebDAV-aio", domain: str = "aioDomain",
                    session_ms: int = 0) -> dict:
    """The door's `request` message for a transfer (DoorRequestInfoMessage, dCache >= 6.2).

    It nests the pool's mover info, except for a failed transfer (dCache leaves it out)."""
    mover = {k: v for k, v in transfer.items() if k not in _MOVER_DROP}
    msg = {
        "VERSION": "1.0", "msgType": "request", "date": local_isodate(), "queuingTime": 0,
        "cellName": door, "cellType": "door", "cellDomain": domain,
        "status": dict(transfer["status"]), "session": transfer["session"],
        "sessionDuration": session_ms, "transferPath": transfer["transferPath"],
        "subject": subject_principals(user, uid, gid, client)[:4],
        "client": client, "clientChain": client, "mappedUID": uid, "mappedGID": gid,
        "owner": user, "pnfsid": transfer["pnfsid"], "billingPath": transfer["billingPath"],
        "fileSize": transfer["fileSize"], "storageInfo": transfer["storageInfo"],
    }
    if transfer["status"]["code"] == 0:
        msg["moverInfo"] = mover
    return msg


def billing_remove(*, path: str, pnfsid: str, size: int, user: str, uid: int, gid: int,
                   client: str, session: str, cell_type: str, cell: str,
                   domain: str = "aioDomain", storage_info: str = "aio:disk@osm") -> dict:
    """`remove`: the pool's RemoveFileInfoMessage, or the door's DoorRequestInfoMessage."""
    if cell_type == "pool":
        return {"version": "1.0", "msgType": "remove", "date": local_isodate(), "queuingTime": 0,
                "transaction": session, "cellName": cell, "cellType": "pool", "cellDomain": domain,
                "status": {"code": 0, "msg": ""}, "session": session,
                "subject": subject_principals(user, uid, gid, client), "pnfsid": pnfsid,
                "billingPath": path, "fileSize": size, "storageInfo": storage_info}
    return {"VERSION": "1.0", "msgType": "remove", "date": local_isodate(), "queuingTime": 0,
            "cellName": cell, "cellType": "door", "cellDomain": domain,
            "status": {"code": 0, "msg": ""}, "session": session, "sessionDuration": 0,
            "transferPath": path, "subject": subject_principals(user, uid, gid, client)[:4],
            "client": client, "clientChain": client, "mappedUID": uid, "mappedGID": gid,
            "owner": user, "pnfsid": pnfsid, "billingPath": path, "fileSize": size,
            "storageInfo": storage_info}


# -- parsing: billing records and SSE inotify events -> StorageEvent -----------

@dataclasses.dataclass(slots=True)   # not frozen: a frozen dataclass is three times slower to make
class StorageEvent:
    """One namespace change, whatever reported it (treat it as read-only)."""

    kind: str                 # transfer | request | remove | store | restore | hit | warning | inotify
    cell_type: str            # pool | door | frontend (SSE)
    path: str
    is_write: bool = False
    is_p2p: bool = False
    status: int = 0
    pnfsid: str | None = None
    size: int | None = None
    user: str | None = None
    client: str | None = None
    time: str | None = None
    storage_class: str | None = None
    source: str = "kafka"
    mask: tuple[str, ...] = ()  # inotify flags (SSE only)
    raw: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def is_dir(self) -> bool:
        return "IN_ISDIR" in self.mask

    def is_upload(self) -> bool:
        """A finished upload, as each source reports it.

        Billing: dynamic-processing's filter, a successful non-P2P pool write.
        SSE: IN_CLOSE_WRITE on a file (at IN_CREATE the file is still empty).
        """
        if self.kind == "inotify":
            return "IN_CLOSE_WRITE" in self.mask and "IN_ISDIR" not in self.mask
        return (self.kind == "transfer" and self.cell_type == "pool" and self.is_write
                and not self.is_p2p and self.status == 0)

    def summary(self) -> dict:
        """The task's `event` object."""
        out = {"path": self.path, "pnfsid": self.pnfsid, "size": self.size, "user": self.user,
               "client": self.client, "time": self.time, "source": self.source,
               "msgType": self.kind, "cellType": self.cell_type}
        if self.mask:
            out["mask"] = list(self.mask)
        return out


def _typed(msg: dict, key: str, kind: type | tuple, where: str = "") -> Any:
    """msg[key] if present and of `kind`; None if absent or null; EventError otherwise."""
    val = msg.get(key)
    if val is None:
        return None
    if not isinstance(val, kind) or (kind is int and isinstance(val, bool)):
        want = {str: "a string", int: "an integer", dict: "an object", list: "an array",
                bool: "a boolean"}.get(kind, getattr(kind, "__name__", str(kind)))
        raise EventError(f"field '{where}{key}' must be {want}, got {type(val).__name__}")
    return val


def _required(msg: dict, key: str, kind: type, where: str = "") -> Any:
    val = _typed(msg, key, kind, where)
    if val is None:
        raise EventError(f"missing field '{where}{key}'")
    return val


# Message types whose records describe one file: they must name it.
FILE_KINDS = frozenset(("transfer", "request", "remove", "store", "restore", "hit"))


def decode(value: bytes | str | dict | None) -> dict:
    """Bytes/str/dict -> the JSON object of one record; EventError says why not.

    orjson: the router parses every billing record, and this is most of its work."""
    if value is None:
        raise EventError("empty message (null value)")
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        if len(value) > MAX_MESSAGE_BYTES:
            unit = "characters" if isinstance(value, str) else "bytes"
            raise EventError(f"message too large ({len(value)} {unit} > {MAX_MESSAGE_BYTES})")
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as e:
            if not isinstance(value, str):
                try:
                    bytes(value).decode("utf-8")
                except UnicodeDecodeError as u:
                    raise EventError(f"not UTF-8: {u}") from None
            raise EventError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise EventError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _subject_names(subject: list) -> tuple[str | None, str | None]:
    """(user, origin) from the principals: UserNamePrincipal, else LoginNamePrincipal; Origin."""
    user = login = origin = None
    for item in subject:
        if not isinstance(item, str) or not item.endswith("]"):
            continue
        name, _, value = item[:-1].partition("[")
        if name == "UserNamePrincipal":
            user = user or value
        elif name == "LoginNamePrincipal":
            login = login or value
        elif name == "Origin":
            origin = origin or value
    return user or login, origin


def parse_billing(value: bytes | str | dict | None, kinds: frozenset | None = None) -> StorageEvent | None:
    """Parse one billing record of any msgType; raises EventError with the reason.

    Fields the router uses must have dCache's types (a wrong type is a malformed
    record, not a silently non-matching one); fields it does not use are not checked.
    With `kinds`, a record whose msgType is not in it is only checked for msgType,
    cellType and status, and None is returned: the router's fast path for the
    records no rule takes (half of them: the door's `request` of every upload).
    """
    msg = decode(value)
    kind = msg.get("msgType")
    cell_type = msg.get("cellType")
    status = msg.get("status")
    if not isinstance(kind, str) or not isinstance(cell_type, str) or not isinstance(status, dict):
        _required(msg, "msgType", str)
        _required(msg, "cellType", str)
        _required(msg, "status", dict)
    code = status.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise EventError("field 'status.code' must be an integer"
                         if code is not None else "missing field 'status.code'")
    if kinds is not None and kind not in kinds:
        return None
    # dynamic-processing takes transferPath (the path the client used); removes and
    # HSM messages only have billingPath. dCache writes "Unknown" when it has none.
    path = msg.get("transferPath")
    if not isinstance(path, str) or not path:
        path = _typed(msg, "transferPath", str) or _typed(msg, "billingPath", str)
    if not path or path[0] != "/":
        if kind in FILE_KINDS:
            raise EventError(f"{kind} message without a usable 'transferPath'/'billingPath'"
                             + (f" (got {path!r})" if path else ""))
        path = ""
    # isWrite is the string "write"/"read"; the door's request carries it in moverInfo.
    mover = msg.get("moverInfo")
    if mover is not None and not isinstance(mover, dict):
        _typed(msg, "moverInfo", dict)
    iw = msg.get("isWrite")
    if iw is None and mover:
        iw = mover.get("isWrite")
    if iw is None:
        if kind == "transfer":
            raise EventError("missing field 'isWrite'")
    elif iw != "write" and iw != "read":
        raise EventError(f"field 'isWrite' must be \"write\" or \"read\", got {iw!r}")
    is_p2p = msg.get("isP2p", False)
    if is_p2p is not False and is_p2p is not True:
        raise EventError(f"field 'isP2p' must be a boolean, got {type(is_p2p).__name__}")
    size = msg.get("fileSize")
    if size is None:
        size = msg.get("filesize")  # the hit message spells it so
        key = "filesize"
    else:
        key = "fileSize"
    if size is not None and (type(size) is not int):
        _typed(msg, key, int)
    pnfsid = msg.get("pnfsid")
    if pnfsid is not None and type(pnfsid) is not str:
        _typed(msg, "pnfsid", str)
    subject = msg.get("subject")
    user = origin = None
    if subject is not None:
        if type(subject) is not list:
            _typed(msg, "subject", list)
        user, origin = _subject_names(subject)
    if not user:
        user = _typed(msg, "owner", str)
    info = msg.get("protocolInfo")
    if info is None and mover:
        info = mover.get("protocolInfo")
    client = None
    if info is not None:
        if type(info) is not dict:
            _typed(msg, "protocolInfo", dict)
        client = info.get("host")
        if client is not None and type(client) is not str:
            _typed(info, "host", str, "protocolInfo.")
    client = client or _typed(msg, "client", str) or origin
    storage_info = msg.get("storageInfo")
    if storage_info is not None and type(storage_info) is not str:
        _typed(msg, "storageInfo", str)
    date = msg.get("date")
    if date is not None and type(date) is not str:
        _typed(msg, "date", str)
    return StorageEvent(kind=kind, cell_type=cell_type, path=path, is_write=iw == "write",
                        is_p2p=is_p2p, status=code, pnfsid=pnfsid, size=size, user=user,
                        client=client, time=date,
                        storage_class=storage_info.split("@", 1)[0] if storage_info else None,
                        source="kafka", raw=msg)


# dCache's inotify flags (frontend.md, "Storage Events"), plus the management ones.
INOTIFY_FLAGS = frozenset((
    "IN_ACCESS", "IN_ATTRIB", "IN_CLOSE_WRITE", "IN_CLOSE_NOWRITE", "IN_CREATE", "IN_DELETE",
    "IN_DELETE_SELF", "IN_MODIFY", "IN_MOVE_SELF", "IN_MOVED_FROM", "IN_MOVED_TO", "IN_OPEN",
    "IN_ISDIR", "IN_IGNORED", "IN_Q_OVERFLOW", "IN_UNMOUNT"))
MANAGEMENT_FLAGS = frozenset(("IN_IGNORED", "IN_Q_OVERFLOW", "IN_UNMOUNT"))


def inotify_mask(event: Any) -> tuple[str, ...]:
    """The `mask` of an inotify event object, checked; EventError says why not."""
    if not isinstance(event, dict):
        raise EventError(f"inotify event must be an object, got {type(event).__name__}")
    mask = event.get("mask")
    if not isinstance(mask, list) or not mask or not all(isinstance(f, str) for f in mask):
        raise EventError("inotify event needs 'mask', a non-empty array of flag names")
    unknown = [f for f in mask if f not in INOTIFY_FLAGS]
    if unknown:
        raise EventError(f"unknown inotify flag(s): {', '.join(unknown)}")
    return tuple(mask)


def _iso_from_millis(ms: Any) -> str | None:
    if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms > 0:
        return local_isodate(ms / 1000.0)
    return None


def parse_inotify(event: Any, *, directory: str, attributes: dict | None = None,
                  received: float | None = None) -> StorageEvent:
    """One SSE inotify event of the subscription watching `directory` -> StorageEvent.

    `attributes` is the file's namespace entry (`GET /api/v1/namespace{path}`:
    pnfsId, size, mtime), when the source looked it up. The event's identity for
    task ids is what the file *is* (path, mask, pnfsid, size, mtime), not the SSE
    id, so a replayed or resynchronised event gives the same task_id.
    """
    mask = inotify_mask(event)
    name = event.get("name")
    if name is None:
        path = directory                      # a "self" or management event
    elif not isinstance(name, str) or not name or "/" in name:
        raise EventError(f"inotify event 'name' must be a file name, got {name!r}")
    else:
        path = directory.rstrip("/") + "/" + name
    attrs = attributes if isinstance(attributes, dict) else {}
    pnfsid = attrs.get("pnfsId") if isinstance(attrs.get("pnfsId"), str) else None
    size = attrs.get("size") if isinstance(attrs.get("size"), int) and not isinstance(attrs.get("size"), bool) \
        else None
    mtime = attrs.get("mtime") if isinstance(attrs.get("mtime"), (int, float)) else None
    raw = {"source": "sse", "path": path, "mask": sorted(mask), "pnfsid": pnfsid, "size": size,
           "mtime": mtime}
    if isinstance(event.get("cookie"), str):
        raw["cookie"] = event["cookie"]
    return StorageEvent(kind="inotify", cell_type="frontend", path=path, pnfsid=pnfsid, size=size,
                        time=_iso_from_millis(mtime) or local_isodate(received), source="sse",
                        mask=mask, raw=raw)
