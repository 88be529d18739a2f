import pytest

from panfaas import events, router

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


def upload(path):
    return events.parse_billing(events.billing_transfer(
        path=path, pnfsid="00", size=1, is_write=True, client="127.0.0.1", client_port=1, user="a",
        uid=1, gid=1, session="s:x", transfer_ms=1))


def test_sample_config_matches_whole_path_only():
    rule = router.parse_rules(SAMPLE)[0]
    assert rule.matches(upload("/data/foo/clip.mp4"))
    assert not rule.matches(upload("/data/foo/sub/clip.mp4"))       # [^/]* does not cross directories
    assert not rule.matches(upload("/prefix/data/foo/clip.mp4"))    # matching is anchored at both ends
    assert not rule.matches(upload("/data/foo/clip-derived.mp4"))   # ignoring: found anywhere


def test_derived_paths_use_backreferences():
    rule = router.parse_rules(SAMPLE)[0]
    urls = {u.name: router.derive("/data/foo/clip.mp4", u) for u in rule.urls}
    assert urls == {"read": "/data/foo/clip.mp4", "write": "/data/foo/clip-derived.mp4",
                    "log": "/data/foo/clip-derived.log"}


def test_task_id_is_deterministic_per_event_and_rule():
    rule = router.parse_rules(SAMPLE)[0]
    ev = upload("/data/foo/clip.mp4")
    assert router.task_id(rule, ev) == router.task_id(rule, events.parse_billing(dict(ev.raw)))
    other = upload("/data/foo/other.mp4")
    assert router.task_id(rule, ev) != router.task_id(rule, other)


@pytest.mark.parametrize("broken, message", [
    ({"files": []}, "at least one rule"),
    ({"files": [{"path-predicate": {"matching": "x"}}]}, r"files\[0\].target"),
    ({"files": [{"target": "t", "path-predicate": {"matching": "("}}]}, "invalid regular expression"),
    ({"files": [{"target": "t", "path-predicate": {"matching": "x"},
                 "urls": {"event": {}}}]}, "reserved"),
    ({"files": [{"target": "t", "path-predicate": {"matching": "x"},
                 "urls": {"o": {"create-path": True}}}]}, "create-path"),
])
def test_config_errors_name_the_setting(broken, message):
    with pytest.raises(router.RouterConfigError, match=message):
        router.parse_rules({**SAMPLE, **broken})
