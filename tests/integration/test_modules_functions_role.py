"""The `functions` role (the final stage of site.yml) with ansible-playbook against a real runtime
and broker, on fixture functions: a python one and a blackbox `exec` one, both fed from Kafka."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from panfaas.client import Functions
from services import BIN, REPO, produce, recap, start_runtime, wait_until

FIXTURES = REPO / "tests" / "fixtures" / "functions"


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    r = start_runtime(tmp_path_factory.mktemp("rt-role"))
    yield r
    r.proc.stop()


def functions_dir(tmp_path, **topics) -> str:
    d = tmp_path / "functions"
    shutil.copytree(FIXTURES, d, dirs_exist_ok=True)
    for yml in d.glob("*/function.yml"):
        text = yml.read_text()
        for placeholder, topic in topics.items():
            text = text.replace(placeholder, topic)
        yml.write_text(text)
    return str(d)


def role(tmp_path, rt, broker, fdir: str, *flags: str, check: bool = True, **extra):
    variables = {"functions_dir": fdir, "functions_api_host": rt.api_host, "functions_auth": rt.auth,
                 "functions_kafka_brokers": [broker.bootstrap], **extra}
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    (tmp_path / "functions.yml").write_text("- hosts: localhost\n  gather_facts: false\n  roles: [functions]\n")
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
    out = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{tmp_path / 'vars.json'}",
                          str(tmp_path / "functions.yml"), *flags], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    if check:
        assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    return out


def test_role_deploys_python_and_blackbox_functions_fed_from_kafka(tmp_path, rt, broker, topics):
    fn = Functions(rt.api_host, rt.auth)
    sums, words = topics("sums", "words")
    fdir = functions_dir(tmp_path, TOPIC_SUMS=sums, TOPIC_WORDS=words)
    first = recap(role(tmp_path, rt, broker, fdir, "--check").stdout)
    assert first["changed"] > 0 and first["failed"] == 0
    assert fn.get("packages", "fixtures") is None                      # check mode deployed nothing
    assert recap(role(tmp_path, rt, broker, fdir).stdout)["changed"] == 4  # package, actions, triggers, rules
    assert recap(role(tmp_path, rt, broker, fdir).stdout)["changed"] == 0
    assert recap(role(tmp_path, rt, broker, fdir, "--check").stdout)["changed"] == 0

    py = fn.get("actions", "fixtures/py-summarize")
    assert py["exec"]["kind"] == "python:3.11" and py["limits"]["timeout"] == 10000
    assert {"key": "description", "value": "sums numbers"} in py["annotations"]
    bb = fn.get("actions", "fixtures/bb-wordcount")
    assert bb["exec"]["kind"] == "blackbox" and bb["exec"]["binary"] is True    # exec + words.py: a zip
    shipped = zipfile.ZipFile(io.BytesIO(base64.b64decode(bb["exec"]["code"])))
    assert shipped.namelist() == ["exec", "words.py"]                    # lib/words.py, by include
    assert shipped.read("words.py") == (FIXTURES / "lib" / "words.py").read_bytes()
    assert bb["exec"]["image"] == "registry.example.org/panfaas/bb-wordcount:0.0.1"
    assert fn.get("rules", "words-to-wordcount")["action"] == {"path": "guest/fixtures", "name": "bb-wordcount"}
    assert fn.get("rules", f"{sums}-py-summarize")["status"] == "active"

    since = int(time.time() * 1000)
    produce(broker.bootstrap, sums, [{"numbers": [1, 2, 3]}])
    produce(broker.bootstrap, words, [{"text": "three little words"}])

    def done(name):
        recs = [a for a in fn.activations(name=name, since=since) if a["response"]["success"]]
        return recs[0] if recs else None
    py_run = wait_until(lambda: done("py-summarize"), 20, what="py-summarize from its topic")
    assert py_run["response"]["result"] == {"sums": [12], "unit": "counts"}
    bb_run = wait_until(lambda: done("bb-wordcount"), 20, what="bb-wordcount from its topic")
    assert bb_run["response"]["result"] == {"words": [3], "lang": "en"}
    assert {"key": "kind", "value": "blackbox"} in bb_run["annotations"]
    assert any(line.endswith("stdout: counting 1 task(s)") for line in bb_run["logs"])

    # For a site: each function a blackbox action on its image, the code injected at its /init
    # (what `wsk action create --docker IMAGE __main__.py` deploys); then back to code.
    only = ["py-summarize"]
    assert recap(role(tmp_path, rt, broker, fdir, functions_only=only, functions_use_images=True).stdout) \
        ["changed"] == 1                                               # only the action changes
    action = fn.get("actions", "fixtures/py-summarize")
    assert action["exec"]["kind"] == "blackbox" and action["exec"]["image"].endswith("py-summarize:0.0.1")
    assert action["exec"]["code"] == (FIXTURES / "py-summarize" / "__main__.py").read_text()
    assert recap(role(tmp_path, rt, broker, fdir, functions_only=only).stdout)["changed"] == 1
    assert fn.get("actions", "fixtures/py-summarize")["exec"]["kind"] == "python:3.11"


def test_a_broken_function_yml_fails_the_stage_naming_the_file(tmp_path, rt, broker):
    fdir = functions_dir(tmp_path, TOPIC_SUMS="s", TOPIC_WORDS="w")
    broken = tmp_path / "functions" / "bb-wordcount" / "function.yml"
    broken.write_text(broken.read_text().replace("kind: blackbox\n", ""))
    shutil.copytree(tmp_path / "functions" / "py-summarize", tmp_path / "functions" / "py-include")
    included = tmp_path / "functions" / "py-include" / "function.yml"
    included.write_text(included.read_text().replace("name: py-summarize", "name: py-include")
                        + "include: [lib/words.py, lib/missing.py]\n")
    (tmp_path / "functions" / "py-summarize" / "__main__.py").unlink()
    out = role(tmp_path, rt, broker, fdir, check=False)
    assert out.returncode != 0
    text = " ".join(out.stdout.split())
    assert f"{tmp_path}/functions/bb-wordcount/function.yml: needs name and kind" in text
    assert f"{tmp_path}/functions/py-summarize/function.yml: needs name and kind" in text  # no __main__.py
    assert f"{tmp_path}/functions/py-include/function.yml: needs name and kind" in text    # no lib/missing.py
    assert "Deploy the actions" not in out.stdout                   # nothing was deployed
