"""files-in-run called directly (main(args)) against the real storage element's WebDAV door:
PROPFIND listings, the selection cuts, and macaroon-authorised links that really work."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
import requests

from services import free_port

FILES = {"a.cxi": 100, "b.cxi": 2000, "c.h5": 50, "notes.txt": 10, "RUN_COMPLETE": 0,
         "sub/d.cxi": 300, "sub/deeper/e.cxi": 400}
MTIMES = {"a.cxi": "2026-01-01T00:00:00", "b.cxi": "2026-02-01T00:00:00", "c.h5": "2026-03-01T00:00:00"}


@pytest.fixture(scope="module")
def run_dir(door):
    d = door.unique_dir("run")
    door.admin.mkdir(f"{d}/sub/deeper")
    for name, size in FILES.items():
        door.put(f"{d}/{name}", bytes([65 + len(name)]) * size)
    for name, when in MTIMES.items():  # the storage reports the files' own mtimes
        t = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC).timestamp()
        os.utime(door.service.data_dir / d.lstrip("/") / name, (t, t))
    return d


@pytest.fixture
def listing(door, fn, run_dir):
    def call(**args):
        url = door.signed(run_dir, "LIST,DOWNLOAD")
        return fn("files-in-run").main({"url": url, **args})
    return call


def names(res):
    assert "error" not in res, res
    return [f["relative"] for f in res["files"]]


def test_default_lists_the_directory_itself(listing, door, run_dir):
    res = listing()
    assert names(res) == ["RUN_COMPLETE", "a.cxi", "b.cxi", "c.h5", "notes.txt"]
    assert res["count"] == 5 == res["total"] and res["truncated"] is False
    a = res["files"][1]
    assert a == {"name": "a.cxi", "path": f"{run_dir}/a.cxi", "relative": "a.cxi", "size": 100,
                 "modified": "2026-01-01T00:00:00Z", "url": door.bare(f"{run_dir}/a.cxi")}
    assert res["directory"] == door.bare(run_dir + "/") and res["authorised"] is None


def test_depth_glob_and_regex(listing):
    assert names(listing(glob="*.cxi")) == ["a.cxi", "b.cxi"]
    assert names(listing(glob="*.cxi", depth=2)) == ["a.cxi", "b.cxi", "sub/d.cxi"]
    assert names(listing(glob="*.cxi", depth="infinity")) == ["a.cxi", "b.cxi", "sub/d.cxi", "sub/deeper/e.cxi"]
    assert names(listing(glob="sub/*", depth=3)) == ["sub/d.cxi"]          # "/": the relative path
    assert names(listing(glob="sub/*/*.cxi", depth=3)) == ["sub/deeper/e.cxi"]
    assert names(listing(glob=["*.h5", "*.txt"])) == ["c.h5", "notes.txt"]
    assert names(listing(regex=r"^sub/.*\.cxi$", depth=5)) == ["sub/d.cxi", "sub/deeper/e.cxi"]
    assert names(listing(exclude=["RUN_COMPLETE", "*.txt"])) == ["a.cxi", "b.cxi", "c.h5"]


def test_size_and_time_cuts_sort_and_limit(listing):
    assert names(listing(min_size=60, max_size=1000, depth=3)) == ["a.cxi", "sub/d.cxi", "sub/deeper/e.cxi"]
    assert names(listing(min_size=2000)) == ["b.cxi"]
    assert names(listing(modified_after="2026-01-15T00:00:00Z", modified_before="2026-02-15")) == ["b.cxi"]
    after = dt.datetime(2026, 2, 15, tzinfo=dt.UTC).timestamp()
    assert names(listing(modified_before=after)) == ["a.cxi", "b.cxi"]
    res = listing(sort="-size", limit=2, depth=3)
    assert names(res) == ["b.cxi", "sub/deeper/e.cxi"] and res["total"] == 7 and res["truncated"] is True
    assert names(listing(sort="modified", glob="*.*"))[:3] == ["a.cxi", "b.cxi", "c.h5"]
    assert names(listing(sort="name", depth=3, glob="*.cxi")) == ["a.cxi", "b.cxi", "sub/d.cxi", "sub/deeper/e.cxi"]


def test_macaroon_authorised_links_download_and_nothing_more(listing, door, run_dir):
    res = listing(glob="*.cxi", depth=2, macaroons=True, activity="DOWNLOAD", lifetime="PT5M")
    assert res["authorised"] == {"activity": "DOWNLOAD", "lifetime": "PT5M"}
    links = {f["relative"]: f["url"] for f in res["files"]}
    assert all("?authz=" in u for u in links.values())
    r = requests.get(links["sub/d.cxi"], timeout=10)
    assert r.status_code == 200 and len(r.content) == FILES["sub/d.cxi"]
    # Each link is for its own file and for downloading only.
    token = links["a.cxi"].split("?authz=")[1]
    assert requests.get(door.bare(f"{run_dir}/b.cxi") + "?authz=" + token, timeout=10).status_code == 403
    assert requests.put(links["a.cxi"], data=b"x", timeout=10).status_code == 403


def test_listing_written_to_storage_without_listing_itself(door, fn, run_dir):
    out = f"{run_dir}/files.json"
    main = fn("files-in-run").main
    for _ in range(2):  # the second run would see files.json: it is left out
        res = main({"url": door.signed(run_dir, "LIST,DOWNLOAD"), "write": door.signed(out, "UPLOAD,DELETE"),
                    "glob": "*"})
        assert "error" not in res, res
    doc = json.loads(door.read_bytes(out))
    assert doc["count"] == 5 and "files.json" not in [f["name"] for f in doc["files"]]
    assert res["listing"] == door.bare(out)


def test_kafka_batch_uses_defaults(door, fn, run_dir):
    msgs = [{"value": {"url": door.signed(run_dir, "LIST,DOWNLOAD"), "task_id": "r1"}}]
    res = fn("files-in-run").main({"messages": msgs, "glob": "*.cxi"})
    assert res["count"] == 1 and res["failed"] == 0
    assert [f["name"] for f in res["results"][0]["files"]] == ["a.cxi", "b.cxi"]


BAD_ARGS = [
    ({"glob": 5}, "'glob' must be a glob pattern or a list of them"),
    ({"regex": "("}, "'regex' is not a regular expression"),
    ({"depth": 0}, "'depth' must be an integer >= 1, got 0"),
    ({"sort": "colour"}, "'sort' must be one of path, name, size, modified"),
    ({"min_size": 10, "max_size": 5}, "'min_size' (10) is larger than 'max_size' (5)"),
    ({"min_size": -1}, "'min_size' must be an integer >= 0"),
    ({"modified_after": "yesterday"}, "'modified_after' must be an ISO 8601 time"),
    ({"limit": 0}, "'limit' must be an integer >= 1"),
    ({"activity": "FLY"}, "'activity' must be a comma list of"),
    ({"lifetime": "1h"}, "'lifetime' must be an ISO 8601 duration"),
    ({"url": None}, "'url' (the URL of the run directory) is required"),
    ({"url": "file:///etc"}, "'url' must be an http(s) URL"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS, ids=[m[:28] for _, m in BAD_ARGS])
def test_bad_arguments(listing, args, message):
    res = listing(**args)
    assert set(res) == {"error"} and message in res["error"], res


def test_unreachable_refused_missing_and_not_a_directory(door, fn, run_dir):
    main = fn("files-in-run").main
    dead = f"http://127.0.0.1:{free_port()}/data/run/"
    assert main({"url": dead})["error"].startswith(f"cannot reach {dead}")
    assert "(HTTP 401" in main({"url": door.bare(run_dir)})["error"]
    other = door.unique_dir("other")
    res = main({"url": door.signed(other, "LIST,DOWNLOAD") .replace(other, run_dir)})
    assert "storage refused access" in res["error"] and "(HTTP 403" in res["error"]
    assert main({"url": door.signed(run_dir + "/nope", "LIST")})["error"].endswith("does not exist (HTTP 404)")
    res = main({"url": door.signed(run_dir + "/a.cxi", "LIST,DOWNLOAD")})
    assert res == {"error": f"{door.bare(run_dir + '/a.cxi')} is a file, not a directory"}
    # The door refuses a link lifetime beyond its maximum: an error, and no listing written.
    out = f"{run_dir}/refused.json"
    res = main({"url": door.signed(run_dir, "LIST,DOWNLOAD"), "macaroons": True, "lifetime": "P30D",
                "write": door.signed(out, "UPLOAD")})
    assert res["error"].startswith(f"the door refused a macaroon for {door.bare(run_dir)}/")
    assert "HTTP 400" in res["error"] and not door.exists(out)
