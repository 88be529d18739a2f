"""`panfaas router check-config` and `panfaas router dry-run`, run as the operator runs them."""

import json
import re
import subprocess

import yaml

from panfaas import events
from services import BIN, free_port

RULES = [
    {"target": "previews", "path-predicate": {"matching": r"/data/.*\.h5"},
     "urls": {"read": {"with-macaroon": {"activity": "DOWNLOAD"}},
              "write": {"with-macaroon": {"activity": "UPLOAD", "lifetime": "PT1H"},
                        "derived-path": {"replacing": r"([^/]*)$", "with": r"\1.png"}}}},
    {"target": "alice-only", "path-predicate": {"matching": r"/data/.*"}, "urls": {"read": {}},
     "event-predicate": {"user": "alice"}},
]


def write_config(tmp_path, rules=RULES, **extra):
    # The broker address is a closed port: dry-run must not need it.
    conf = {"kafka-client": {"id": "cli-test", "bootstrap-servers": f"127.0.0.1:{free_port()}"},
            "url-generator": {"base": "https://dcache.example.org/",
                              "macaroons": {"username": "u", "password": "p"}},
            "files": rules, **extra}
    p = tmp_path / "router.yml"
    p.write_text(yaml.safe_dump(conf))
    return p


def panfaas(*args, stdin=None):
    return subprocess.run([str(BIN / "panfaas"), "router", *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def billing(path, user="alice"):
    return json.dumps(events.billing_transfer(
        path=path, pnfsid="0000AA", size=10, is_write=True, client="192.0.2.1", client_port=1, user=user,
        uid=1, gid=1, session="door:w@d:x", transfer_ms=1))


def test_check_config_ok_and_errors(tmp_path):
    good = panfaas("check-config", str(write_config(tmp_path)))
    assert good.returncode == 0 and "ok (2 rules, source kafka, targets previews, alice-only)" in good.stdout
    bad_rules = [{"target": "t", "path-predicate": {"matching": "("}, "urls": {"x": {"derived-path": {}}}}]
    bad = panfaas("check-config", str(write_config(tmp_path, bad_rules, extra_key=1)))
    assert bad.returncode == 2
    lines = bad.stderr.splitlines()
    assert any(":1: extra_key: unknown setting" in x for x in lines), lines
    assert any("files[0].path-predicate.matching: invalid regular expression" in x for x in lines), lines
    assert lines[-1].endswith(": 2 errors")


def test_serve_refuses_a_bad_config_with_one_line(tmp_path):
    out = subprocess.run([str(BIN / "panfaas"), "router", "serve", "--config",
                          str(write_config(tmp_path, [{"target": "t", "path-predicate": {"matching": "("}}]))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "invalid regular expression" in out.stderr


def test_dry_run_prints_one_line_per_task(tmp_path):
    out = panfaas("dry-run", str(write_config(tmp_path)), "--event", billing("/data/run1/f.h5"), "--no-macaroons")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["topic"] for x in lines] == ["previews", "alice-only"]
    task = lines[0]["value"]
    assert task["read"] == "https://dcache.example.org/data/run1/f.h5"
    assert task["write"] == "https://dcache.example.org/data/run1/f.h5.png"
    assert task["event"]["path"] == "/data/run1/f.h5" and len(task["task_id"]) == 32


def test_dry_run_prints_nothing_when_no_rule_matches(tmp_path):
    out = panfaas("dry-run", str(write_config(tmp_path)), "--event", billing("/elsewhere/f.h5"), "--no-macaroons")
    assert out.returncode == 0 and out.stdout == ""


def test_dry_run_reads_events_from_stdin_and_shows_dead_letters(tmp_path):
    stdin = "\n".join([billing("/data/a.h5", user="bob"), "not json", "", billing("/data/b.txt")]) + "\n"
    out = panfaas("dry-run", str(write_config(tmp_path)), "--event", "-", "--no-macaroons", stdin=stdin)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(x["topic"], x["value"].get("event", {}).get("path")) for x in lines] == [
        ("previews", "/data/a.h5"), ("dead-letter", None), ("alice-only", "/data/b.txt")]
    dead = lines[1]["value"]
    assert dead["reason"].startswith("malformed event: not JSON") and dead["value"] == "not json"
    assert dead["line"] == 2


def test_dry_run_task_ids_are_the_routers(tmp_path):
    ev = billing("/data/a.h5")
    pretty = json.dumps(json.loads(ev), indent=2)        # formatting does not change the id
    ids = [json.loads(panfaas("dry-run", str(write_config(tmp_path)), "--event", e,
                              "--no-macaroons").stdout.splitlines()[0])["value"]["task_id"] for e in (ev, pretty)]
    assert ids[0] == ids[1]


def test_dry_run_without_a_storage_element_dead_letters_with_the_reason(tmp_path):
    conf = write_config(tmp_path)
    text = conf.read_text().replace("https://dcache.example.org/", f"http://127.0.0.1:{free_port()}/")
    conf.write_text(text)
    out = panfaas("dry-run", str(conf), "--event", billing("/data/a.h5"))
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert lines[0]["topic"] == "dead-letter" and lines[0]["value"]["target"] == "previews"
    # the rule's two URLs are requested concurrently: either may be the one reported
    assert re.match(r"macaroon request \((DOWNLOAD|UPLOAD)\) for /data/a\.h5(\.png)? failed after 2 attempts: "
                    r"ClientConnectorError", lines[0]["value"]["reason"])
    assert lines[1]["topic"] == "alice-only"       # a rule without macaroons is not held up


def test_help_explains_the_commands():
    out = panfaas("dry-run", "--help")
    assert "--no-macaroons" in out.stdout
    assert "touches no broker" in " ".join(panfaas("--help").stdout.split())
