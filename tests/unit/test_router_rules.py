"""Rules: dynamic-processing's path predicates and derived paths, and panfaas's event filters."""

import pytest

from panfaas import events, router
from panfaas.router import rules as R

SAMPLE = {
    "kafka-client": {"id": "my-unique-ID", "bootstrap-servers": "localhost:9092"},
    "url-generator": {"base": "https://dcache.example.org/",
                      "macaroons": {"username": "u", "password": "p", "default-lifetime": "PT15M"}},
    "files": [{
        "target": "uploaded-foo-movies",
        "path-predicate": {"matching": r"/data/foo/[^/]*\.mp4", "ignoring": r"-derived\.[^/.]*$"},
        "urls": {
            "read": {"with-macaroon": {"activity": "DOWNLOAD"}},
            "write": {"with-macaroon": {"activity": "UPLOAD"},
                      "derived-path": {"replacing": r"([^/]*)\.([^.]*)$", "with": r"\1-derived.\2"}},
            "log": {"with-macaroon": {"activity": "UPLOAD"},
                    "derived-path": {"replacing": r"([^/]*)\.[^.]*$", "with": r"\1-derived.log"}},
        },
    }],
}


def upload(path="/data/foo/clip.mp4", **kw):
    args = dict(path=path, pnfsid="0000AB", size=1000, is_write=True, client="192.0.2.10", client_port=1,
                user="alice", uid=1, gid=1, session="door:x@d:s1", transfer_ms=1, storage_info="test:disk@osm")
    args.update(kw)
    return events.parse_billing(events.billing_transfer(**args))


def rule_with(predicate=None, matching=r"/data/.*", urls=None):
    rule = {"target": "t", "path-predicate": {"matching": matching}, "urls": urls or {"read": {}}}
    if predicate:
        rule["event-predicate"] = predicate
    conf = {**SAMPLE, "files": [rule]}
    return router.from_dict(conf).rules[0]


def sample_rule():
    return router.from_dict(SAMPLE).rules[0]


def test_matching_must_match_the_whole_path():
    rule = sample_rule()
    assert rule.matches(upload("/data/foo/clip.mp4"))
    assert not rule.matches(upload("/data/foo/sub/clip.mp4"))       # [^/]* does not cross directories
    assert not rule.matches(upload("/prefix/data/foo/clip.mp4"))    # anchored at the start...
    assert not rule.matches(upload("/data/foo/clip.mp4.bak"))       # ...and at the end


def test_ignoring_rejects_a_path_found_anywhere_in_it():
    rule = sample_rule()
    assert not rule.matches(upload("/data/foo/clip-derived.mp4"))
    # "unless anchored": an ignoring pattern that is not found does not reject
    assert rule.matches(upload("/data/foo/derived.mp4"))


def test_derived_paths_use_backreferences():
    urls = {u.name: u.derive("/data/foo/clip.mp4") for u in sample_rule().urls}
    assert urls == {"read": "/data/foo/clip.mp4", "write": "/data/foo/clip-derived.mp4",
                    "log": "/data/foo/clip-derived.log"}


def test_derived_path_keeps_the_prefix_and_drops_what_follows_the_match():
    # dynamic-processing returns path[:match.start()] + expansion: the rest is dropped
    u = rule_with(urls={"out": {"derived-path": {"replacing": r"/raw/", "with": "/processed/"}}}).urls[0]
    assert u.derive("/data/raw/run1/f.h5") == "/data/processed/"


def test_derived_path_group_beyond_the_pattern_stays_literal_and_missing_group_is_empty():
    u = rule_with(urls={"out": {"derived-path": {"replacing": r"(a)|(b)$", "with": r"\2x\3"}}}).urls[0]
    assert u.derive("/x/b") == "/x/bx\\3"
    assert u.derive("/x/a") == "/x/x\\3"


def test_derived_path_that_does_not_occur_is_an_error_not_the_input_path():
    # dynamic-processing would hand out the *input* path (an UPLOAD URL over the original file)
    u = rule_with(urls={"out": {"derived-path": {"replacing": r"\.h5$", "with": ".png"}}}).urls[0]
    with pytest.raises(R.DeriveError, match="does not occur"):
        u.derive("/data/file.cxi")


def test_java_named_groups_are_translated():
    rule = rule_with(matching=r"/data/(?<run>run\d+)/.*",
                     urls={"out": {"derived-path": {"replacing": r"(?<stem>[^/]*)\.h5$", "with": r"\1.png"}}})
    assert rule.matches(upload("/data/run7/f.h5"))
    assert rule.urls[0].derive("/data/run7/f.h5") == "/data/run7/f.png"


def test_default_event_predicate_is_dynamic_processings_filter():
    rule = rule_with()
    assert rule.matches(upload("/data/x"))
    read = upload("/data/x", is_write=False)
    failed = upload("/data/x", status=(666, "disk full"))
    p2p = events.parse_billing({**upload("/data/x").raw, "isP2p": True})
    door = events.parse_billing(events.billing_request(upload("/data/x").raw, user="alice", uid=1, gid=1,
                                                       client="192.0.2.10"))
    for ev in (read, failed, p2p, door):
        assert not rule.matches(ev), ev


@pytest.mark.parametrize("predicate, yes, no", [
    ({"user": "alice"}, {}, {"user": "bob"}),
    ({"user": ["bob", "alice"]}, {}, {"user": "carol"}),
    ({"client": "192.0.2.0/24"}, {}, {"client": "198.51.100.7"}),
    ({"client": ["10.0.0.0/8", "192.0.2.10"]}, {}, {"client": "192.0.2.11"}),
    ({"client": "2001:db8::/32"}, {"client": "2001:db8::5"}, {"client": "192.0.2.10"}),
    ({"file-size": {"min": 1000}}, {"size": 1000}, {"size": 999}),
    ({"file-size": {"max": "1 KiB"}}, {"size": 1024}, {"size": 1025}),
    ({"file-size": {"min": "1kB", "max": "2 kB"}}, {"size": 1500}, {"size": 2001}),
    ({"storage-class": "test:disk"}, {}, {"storage_info": "other:tape@osm"}),
    ({"storage-class": ["raw:*"]}, {"storage_info": "raw:tape@osm"}, {"storage_info": "test:disk@osm"}),
])
def test_each_filter(predicate, yes, no):
    rule = rule_with(predicate)
    assert rule.matches(upload("/data/x", **yes))
    assert not rule.matches(upload("/data/x", **no))


def test_client_filter_accepts_ipv4_mapped_addresses():
    rule = rule_with({"client": "192.0.2.0/24"})
    assert rule.matches(upload("/data/x", client="::ffff:192.0.2.10"))
    assert not rule.matches(upload("/data/x", client="not-an-ip"))


def test_user_comes_from_the_subject_principals():
    ev = upload("/data/x", user="alice")
    assert ev.raw["subject"][2] == "UserNamePrincipal[alice]"
    assert rule_with({"user": "alice"}).matches(ev)


def remove(cell_type):
    return events.parse_billing(events.billing_remove(
        path="/data/x.h5", pnfsid="00A", size=5, user="alice", uid=1, gid=1, client="192.0.2.10",
        session="s", cell_type=cell_type, cell="pool1" if cell_type == "pool" else "WebDAV-aio"))


def test_msg_type_and_cell_type_select_other_messages():
    removes = rule_with({"msgType": "remove"})
    assert removes.matches(remove("door")) and removes.matches(remove("pool"))
    assert not removes.matches(upload("/data/x.h5"))
    door_only = rule_with({"msgType": "remove", "cellType": "door"})
    assert door_only.matches(remove("door")) and not door_only.matches(remove("pool"))


def test_read_transfers_and_any_status_when_asked():
    reads = rule_with({"msgType": "transfer", "isWrite": "read"})
    assert reads.matches(upload("/data/x", is_write=False)) and not reads.matches(upload("/data/x"))
    failures = rule_with({"msgType": "transfer", "status": "any", "isWrite": "any"})
    assert failures.matches(upload("/data/x", status=(666, "x")))


def inotify(mask, name="f.h5", directory="/data"):
    return events.parse_inotify({"name": name, "mask": mask}, directory=directory,
                                attributes={"pnfsId": "00B", "size": 7, "mtime": 1_700_000_000_000})


def test_default_predicate_takes_close_write_from_sse():
    rule = rule_with()
    assert rule.matches(inotify(["IN_CLOSE_WRITE"]))
    for mask in (["IN_CREATE"], ["IN_MODIFY"], ["IN_CLOSE_WRITE", "IN_ISDIR"]):
        assert not rule.matches(inotify(mask)), mask


def test_mask_filter_for_sse_events():
    moved = rule_with({"msgType": "inotify", "mask": ["IN_MOVED_TO", "IN_CLOSE_WRITE"]})
    assert moved.matches(inotify(["IN_MOVED_TO"])) and moved.matches(inotify(["IN_CLOSE_WRITE"]))
    assert not moved.matches(inotify(["IN_DELETE"]))
    dirs = rule_with({"msgType": "inotify", "mask": ["IN_CREATE", "IN_ISDIR"]})
    assert dirs.matches(inotify(["IN_CREATE", "IN_ISDIR"], name="run9"))
    assert not dirs.matches(inotify(["IN_CREATE"]))


def test_several_rules_may_match_one_event():
    conf = {**SAMPLE, "files": [
        {"target": "a", "path-predicate": {"matching": r"/data/.*"}, "urls": {"r": {}}},
        {"target": "b", "path-predicate": {"matching": r".*\.h5"}, "urls": {"r": {}}},
        {"target": "c", "path-predicate": {"matching": r"/other/.*"}, "urls": {"r": {}}},
    ]}
    rules = router.from_dict(conf).rules
    assert [r.target for r in router.matching_rules(rules, upload("/data/f.h5"))] == ["a", "b"]


def test_task_id_is_deterministic_per_event_and_rule():
    rule = sample_rule()
    ev = upload("/data/foo/clip.mp4")
    same = events.parse_billing(dict(reversed(list(ev.raw.items()))))   # key order does not count
    assert router.task_id(rule, ev) == router.task_id(rule, same)
    assert router.task_id(rule, ev) != router.task_id(rule, upload("/data/foo/other.mp4"))
    assert router.task_id(rule, ev) != router.task_id(rule, upload("/data/foo/clip.mp4", session="door:x@d:s2"))
    other_rule = router.from_dict({**SAMPLE, "files": SAMPLE["files"] * 2}).rules[1]
    assert router.task_id(rule, ev) != router.task_id(other_rule, ev)


def test_task_is_the_url_map_plus_event_and_task_id():
    rule = sample_rule()
    ev = upload("/data/foo/clip.mp4")
    task = router.make_task(rule, ev, {"read": "https://x/r", "write": "https://x/w", "log": "https://x/l"})
    assert list(task) == ["read", "write", "log", "event", "task_id"]
    assert task["event"] == {"path": "/data/foo/clip.mp4", "pnfsid": "0000AB", "size": 1000, "user": "alice",
                             "client": "192.0.2.10", "time": ev.time, "source": "kafka", "msgType": "transfer",
                             "cellType": "pool"}


def test_rules_alone_for_tools():
    """parse_rules/derive: the rules of a `files:` list without the rest of a configuration."""
    rules = router.parse_rules({"files": SAMPLE["files"]})
    assert [r.target for r in rules] == ["uploaded-foo-movies"]
    assert router.derive("/data/foo/clip.mp4", rules[0].urls[1]) == "/data/foo/clip-derived.mp4"
    with pytest.raises(router.RouterConfigError, match=r"rules: files\[0\].target: required"):
        router.parse_rules({"files": [{"path-predicate": {"matching": "x"}}]})
