"""files-in-run: the files of a run directory, listed over WebDAV (PROPFIND), with cuts.

A standalone OpenWhisk python action (standard library only, and storagehttp.py and taskrun.py
from functions/lib, shipped beside it). Called directly with `url` (the run directory) or from a Kafka feed
trigger, `{"messages": [{"value": {...}}]}` (the event router sends one when a run's
completion marker is uploaded). Selection: glob or regex on names, size and modification-time
ranges, recursion depth, limit and sort. Optionally each link is pre-authorised with its own
macaroon, requested from the door as dCache does it (POST with Content-Type
application/macaroon-request). README.md lists the arguments.
"""

import datetime as dt
import email.utils
import fnmatch
import json
import re
import time
import urllib.parse
import xml.etree.ElementTree as ET

from storagehttp import FunctionError, Http, check, put, redact
from taskrun import flag_arg, handle, url_arg

DAV = "{DAV:}"
PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
                 b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/></D:prop></D:propfind>")
MAX_DEPTH = 64            # "infinity"
MAX_DIRECTORIES = 10000   # directories one call may visit
SORT_KEYS = ("path", "name", "size", "modified")
ACTIVITIES = ("READ_METADATA", "UPDATE_METADATA", "LIST", "DOWNLOAD", "MANAGE", "UPLOAD", "DELETE", "STAGE")
DURATION = re.compile(r"P(?=\d|T\d)(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?")


# -- arguments ---------------------------------------------------------------------------

def _int(args, key, default, lo):
    v = args.get(key, default)
    if v is None:
        return None
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise FunctionError(f"'{key}' must be an integer >= {lo}, got {v!r}")
    return v


def _time(args, key):
    v = args.get(key)
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return dt.datetime.fromtimestamp(v, dt.UTC)
    try:
        t = dt.datetime.fromisoformat(str(v).strip())
    except ValueError:
        raise FunctionError(f"'{key}' must be an ISO 8601 time (2026-11-22T07:00:00Z) or epoch seconds, "
                            f"got {v!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _patterns(args, key):
    v = args.get(key)
    if v is None:
        return []
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
        raise FunctionError(f"'{key}' must be a glob pattern or a list of them, got {v!r}")
    return v


def parse_args(args):
    url = url_arg(args, "url", "the URL of the run directory")
    write = url_arg(args, "write", "the URL to PUT the listing to", required=False)
    regex = args.get("regex")
    if regex is not None:
        try:
            regex = re.compile(str(regex))
        except re.error as e:
            raise FunctionError(f"'regex' is not a regular expression: {e}") from None
    depth = args.get("depth", 1)
    depth = MAX_DEPTH if depth in ("infinity", "inf", -1) else _int({"depth": depth}, "depth", 1, 1)
    sort = args.get("sort", "path")
    if not isinstance(sort, str) or sort.lstrip("-") not in SORT_KEYS:
        raise FunctionError(f"'sort' must be one of {', '.join(SORT_KEYS)} (prefix - for descending), got {sort!r}")
    min_size, max_size = _int(args, "min_size", None, 0), _int(args, "max_size", None, 0)
    after, before = _time(args, "modified_after"), _time(args, "modified_before")
    if min_size is not None and max_size is not None and min_size > max_size:
        raise FunctionError(f"'min_size' ({min_size}) is larger than 'max_size' ({max_size})")
    if after and before and after > before:
        raise FunctionError("'modified_after' is later than 'modified_before'")
    activity = args.get("activity", "DOWNLOAD")
    acts = [a.strip() for a in str(activity).split(",") if a.strip()]
    if not acts or any(a not in ACTIVITIES for a in acts):
        raise FunctionError(f"'activity' must be a comma list of {', '.join(ACTIVITIES)}, got {activity!r}")
    lifetime = args.get("lifetime", "PT1H")
    if not isinstance(lifetime, str) or not DURATION.fullmatch(lifetime):
        raise FunctionError(f"'lifetime' must be an ISO 8601 duration such as PT15M or P1D, got {lifetime!r}")
    return {"url": url, "write": write, "glob": _patterns(args, "glob"), "regex": regex,
            "exclude": _patterns(args, "exclude"), "min_size": min_size, "max_size": max_size,
            "after": after, "before": before, "depth": depth, "limit": _int(args, "limit", None, 1),
            "sort": sort, "macaroons": flag_arg(args, "macaroons", False), "activity": ",".join(acts),
            "lifetime": lifetime}


# -- listing -------------------------------------------------------------------------------

def _at(base, path, query=False):
    """A URL for `path` on the same door: bare, or with the listing URL's query (its macaroon)."""
    p = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((p.scheme, p.netloc, urllib.parse.quote(path), p.query if query else "", ""))


def propfind(http_, url):
    """[(path, is_dir, size, mtime)] of a collection and its direct members (Depth: 1)."""
    resp = http_.request("PROPFIND", url, {"Depth": "1", "Content-Type": "application/xml; charset=utf-8",
                                           "Content-Length": str(len(PROPFIND_BODY))}, PROPFIND_BODY)
    check(http_, resp, url, ok=(207,))
    body = http_.read_all(resp, url)
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise FunctionError(f"the door's PROPFIND answer for {redact(url)} is not XML: {e}") from None
    out = []
    for r in root.iter(DAV + "response"):
        href = r.findtext(DAV + "href") or ""
        path = urllib.parse.unquote(urllib.parse.urlsplit(href).path)
        prop = None
        for ps in r.iter(DAV + "propstat"):
            if " 200 " in (ps.findtext(DAV + "status") or " 200 "):
                prop = ps.find(DAV + "prop")
                break
        is_dir = prop is not None and prop.find(f"{DAV}resourcetype/{DAV}collection") is not None
        size = prop.findtext(DAV + "getcontentlength") if prop is not None else None
        modified = prop.findtext(DAV + "getlastmodified") if prop is not None else None
        try:
            mtime = email.utils.parsedate_to_datetime(modified).astimezone(dt.UTC) if modified else None
        except (TypeError, ValueError):
            mtime = None
        out.append((path.rstrip("/") or "/", is_dir, int(size) if size and size.isdigit() else None, mtime))
    return out


def walk(http_, url, depth):
    """Files under the directory at `url`, down to `depth` levels (1: its own entries)."""
    top = urllib.parse.unquote(urllib.parse.urlsplit(url).path).rstrip("/") or "/"
    entries = propfind(http_, url)
    this = [e for e in entries if e[0] == top]
    if this and not this[0][1]:
        raise FunctionError(f"{redact(url)} is a file, not a directory")
    files, todo, seen = [], [(top, entries, 1)], 1
    while todo:
        here, entries, level = todo.pop()
        for path, is_dir, size, mtime in entries:
            if path == here:
                continue
            if not is_dir:
                files.append({"path": path, "size": size, "mtime": mtime})
            elif level < depth:
                seen += 1
                if seen > MAX_DIRECTORIES:
                    raise FunctionError(f"more than {MAX_DIRECTORIES} directories under {redact(url)}: "
                                        "use a smaller depth")
                todo.append((path, propfind(http_, _at(url, path + "/", query=True)), level + 1))
    return top, files


def glob_match(pattern, rel):
    """A pattern without '/' matches the file name; with '/', the path relative to the run,
    segment by segment (so '*' does not cross directories, as in a shell)."""
    if "/" not in pattern:
        return fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern)
    parts, segs = pattern.strip("/").split("/"), rel.split("/")
    return len(parts) == len(segs) and all(fnmatch.fnmatchcase(s, p) for s, p in zip(segs, parts, strict=True))


def select(top, files, o):
    out = []
    for f in files:
        rel = f["path"][len(top.rstrip("/")) + 1:]
        name = rel.rsplit("/", 1)[-1]
        if o["glob"] and not any(glob_match(g, rel) for g in o["glob"]):
            continue
        if any(glob_match(g, rel) for g in o["exclude"]):
            continue
        if o["regex"] and not o["regex"].search(rel):
            continue
        if o["min_size"] is not None and (f["size"] is None or f["size"] < o["min_size"]):
            continue
        if o["max_size"] is not None and (f["size"] is None or f["size"] > o["max_size"]):
            continue
        if o["after"] and (f["mtime"] is None or f["mtime"] < o["after"]):
            continue
        if o["before"] and (f["mtime"] is None or f["mtime"] > o["before"]):
            continue
        out.append({**f, "name": name, "relative": rel})
    key = o["sort"].lstrip("-")
    field = {"path": "path", "name": "name", "size": "size", "modified": "mtime"}[key]
    missing = dt.datetime.min.replace(tzinfo=dt.UTC) if key == "modified" else -1
    out.sort(key=lambda f: (f[field] if f[field] is not None else missing, f["path"]),
             reverse=o["sort"].startswith("-"))
    return out


def authorise(http_, link, token_url, activity, lifetime):
    """A link carrying its own macaroon, asked from the door with the listing URL's credential."""
    query = urllib.parse.urlsplit(token_url).query
    url = link + ("?" + query if query else "")
    body = json.dumps({"caveats": [f"activity:{activity}"], "validity": lifetime}).encode()
    resp = http_.request("POST", url, {"Content-Type": "application/macaroon-request",
                                       "Content-Length": str(len(body))}, body)
    try:
        check(http_, resp, url, ok=(200,))
        answer = json.loads(http_.read_all(resp, url))
        macaroon = answer["macaroon"]
    except FunctionError as e:
        raise FunctionError(f"the door refused a macaroon for {link}: {e}") from None
    except (ValueError, KeyError, TypeError):
        raise FunctionError(f"the door's macaroon answer for {link} has no 'macaroon'") from None
    return f"{link}?authz={macaroon}"


def list_run(args):
    t0 = time.perf_counter()
    o = parse_args(args)
    http_ = Http()
    try:
        top, files = walk(http_, o["url"], o["depth"])
        if o["write"]:  # the listing does not list itself
            own = urllib.parse.unquote(urllib.parse.urlsplit(o["write"]).path)
            files = [f for f in files if f["path"] != own]
        chosen = select(top, files, o)
        total = len(chosen)
        if o["limit"] is not None:
            chosen = chosen[:o["limit"]]
        out = []
        for f in chosen:
            link = _at(o["url"], f["path"])
            if o["macaroons"]:
                link = authorise(http_, link, o["url"], o["activity"], o["lifetime"])
            out.append({"name": f["name"], "path": f["path"], "relative": f["relative"], "size": f["size"],
                        "modified": f["mtime"].isoformat().replace("+00:00", "Z") if f["mtime"] else None,
                        "url": link})
        res = {"files": out, "count": len(out), "total": total, "truncated": len(out) < total,
               "directory": _at(o["url"], top.rstrip("/") + "/"),
               "authorised": {"activity": o["activity"], "lifetime": o["lifetime"]} if o["macaroons"] else None}
        if o["write"]:
            put(http_, o["write"], json.dumps(res, indent=1).encode(), "application/json")
            res["listing"] = redact(o["write"])
        res["seconds"] = round(time.perf_counter() - t0, 4)
    finally:
        http_.close()
    return res


def without_files(res):
    """A listing that went to storage stays out of a batch's answer, which stays small."""
    return {k: v for k, v in res.items() if k != "files"} if "listing" in res else res


def main(args):
    # One task, or a Kafka feed batch (one listing per task).
    return handle(args, list_run, "files-in-run", "listings", brief=without_files)
