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
import json
import re
from typing import Any

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
                     local_endpoint: str | None = None, transfer_size: int | None = None,
                     transfer_path: str | None = None) -> dict:
    """A pool `transfer` message (MoverInfoMessage), field for field.

    `size` is the file's size, `transfer_size` the bytes moved (less for a ranged
    or interrupted download; defaults to `size`). `path` is the namespace path
    (billingPath), `transfer_path` the one the client used (defaults to `path`)."""
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
        "isP2p": False, "transferPath": transfer_path or path,
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


@dataclasses.dataclass(frozen=True)
class StorageEvent:
    """One namespace change, whatever reported it."""

    kind: str                 # transfer | request | remove | store | restore | hit | warning | inotify
    cell_type: str            # pool | door | frontend
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
    raw: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def is_upload(self) -> bool:
        """dynamic-processing's filter: a successful, non-P2P pool write."""
        return (self.kind == "transfer" and self.cell_type == "pool" and self.is_write
                and not self.is_p2p and self.status == 0)

    def summary(self) -> dict:
        return {"path": self.path, "pnfsid": self.pnfsid, "size": self.size, "user": self.user,
                "client": self.client, "time": self.time, "source": self.source,
                "msgType": self.kind, "cellType": self.cell_type}


_PRINCIPAL = re.compile(r"^(\w+)\[(.*)\]$")


def principals(subject: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(subject, list):
        for item in subject:
            m = _PRINCIPAL.match(item) if isinstance(item, str) else None
            if m:
                out.setdefault(m.group(1), []).append(m.group(2))
    return out


def _field(msg: dict, key: str, kind: type | tuple, required: bool = True) -> Any:
    if key not in msg or msg[key] is None:
        if required:
            raise EventError(f"missing field '{key}'")
        return None
    val = msg[key]
    if not isinstance(val, kind) or (kind is int and isinstance(val, bool)):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise EventError(f"field '{key}' must be {want}, got {type(val).__name__}")
    return val


def parse_billing(value: bytes | str | dict) -> StorageEvent:
    """Parse one billing record; raises EventError with the reason when unusable."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) > MAX_MESSAGE_BYTES:
            raise EventError(f"message too large ({len(value)} bytes > {MAX_MESSAGE_BYTES})")
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EventError(f"not UTF-8: {e}") from None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise EventError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise EventError(f"expected a JSON object, got {type(value).__name__}")
    msg = value
    kind = _field(msg, "msgType", str)
    cell_type = _field(msg, "cellType", str)
    status = _field(msg, "status", dict)
    code = status.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise EventError("field 'status.code' must be int")
    path = msg.get("transferPath") or msg.get("billingPath")
    if kind in ("transfer", "request", "remove", "store", "restore", "hit"):
        if not isinstance(path, str) or not path.startswith("/"):
            raise EventError("missing or invalid 'transferPath'/'billingPath'")
    else:
        path = path if isinstance(path, str) else ""
    is_write = False
    if "isWrite" in msg:
        iw = msg["isWrite"]
        if iw not in ("write", "read"):
            raise EventError(f"field 'isWrite' must be \"write\" or \"read\", got {iw!r}")
        is_write = iw == "write"
    is_p2p = msg.get("isP2p", False)
    if not isinstance(is_p2p, bool):
        raise EventError("field 'isP2p' must be a boolean")
    size = msg.get("fileSize", msg.get("filesize"))
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise EventError("field 'fileSize' must be an integer")
    pr = principals(msg.get("subject"))
    user = (pr.get("UserNamePrincipal") or pr.get("LoginNamePrincipal") or [msg.get("owner")])[0]
    client = (msg.get("protocolInfo") or {}).get("host") if isinstance(msg.get("protocolInfo"), dict) else None
    client = client or msg.get("client") or (pr.get("Origin") or [None])[0]
    storage_info = msg.get("storageInfo")
    storage_class = storage_info.split("@", 1)[0] if isinstance(storage_info, str) else None
    return StorageEvent(kind=kind, cell_type=cell_type, path=path, is_write=is_write,
                        is_p2p=is_p2p, status=code, pnfsid=msg.get("pnfsid"), size=size,
                        user=user if isinstance(user, str) else None,
                        client=client if isinstance(client, str) else None,
                        time=msg.get("date") if isinstance(msg.get("date"), str) else None,
                        storage_class=storage_class, source="kafka", raw=msg)
