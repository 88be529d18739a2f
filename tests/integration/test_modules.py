"""The openwhisk_* Ansible modules in real ansible-playbook runs against a real runtime: check
mode changes nothing, a run creates, a second run reports changed=0, a change is seen (in
check mode too), state=absent removes; and every module documents exactly its arguments."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml

from panfaas.client import Functions
from services import BIN, REPO, recap, start_runtime, unique_topic

MODULES = ("openwhisk_action", "openwhisk_package", "openwhisk_rule", "openwhisk_trigger")

PLAY = """
- name: OpenWhisk entities through the modules
  hosts: localhost
  gather_facts: false
  vars:
    conn: &conn
      api_host: "{{ api_host }}"
      auth: "{{ auth }}"
      state: "{{ state | default('present') }}"
  tasks:
    - name: Package
      openwhisk_package:
        <<: *conn
        name: "{{ pkg }}"
        parameters: {bucket: "{{ bucket | default('results') }}"}
      when: state | default('present') == 'present'
    - name: Python action from a directory
      openwhisk_action:
        <<: *conn
        name: "{{ pkg }}/summarize"
        src: "{{ fixtures }}/py-summarize"
        limits: {timeout: 10000}
        parameters: {scale: "{{ scale | default(2) | int }}"}
      when: state | default('present') == 'present'
    - name: Blackbox action from a directory with an exec, and a shared module beside it
      openwhisk_action:
        <<: *conn
        name: "{{ pkg }}/wordcount"
        kind: blackbox
        src: "{{ fixtures }}/bb-wordcount"
        include: [lib/words.py]
      when: state | default('present') == 'present'
    - name: Sequence
      openwhisk_action:
        <<: *conn
        name: "{{ pkg }}-pipeline"
        kind: sequence
        components: ["/_/{{ pkg }}/summarize"]
    - name: Kafka feed trigger
      openwhisk_trigger:
        <<: *conn
        name: "{{ topic }}"
        feed: /whisk.system/messaging/kafkaFeed
        feed_parameters: {brokers: ["{{ bootstrap }}"], topic: "{{ topic }}", isJSONData: true}
    - name: Plain trigger
      openwhisk_trigger:
        <<: *conn
        name: "{{ pkg }}-manual"
        parameters: {source: manual}
    - name: Rule
      openwhisk_rule:
        <<: *conn
        name: "{{ topic }}-summarize"
        trigger: "/_/{{ topic }}"
        action: "/_/{{ pkg }}/summarize"
        active: "{{ active | default(true) | bool }}"
    - name: Packaged actions go before their package
      openwhisk_action:
        <<: *conn
        name: "{{ item }}"
      loop: ["{{ pkg }}/summarize", "{{ pkg }}/wordcount"]
      when: state | default('present') == 'absent'
    - name: Package last
      openwhisk_package:
        <<: *conn
        name: "{{ pkg }}"
      when: state | default('present') == 'absent'
"""


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    r = start_runtime(tmp_path_factory.mktemp("rt-modules"))
    yield r
    r.proc.stop()


def run(tmp_path, rt, broker, variables: dict, *flags: str) -> dict:
    book = tmp_path / "play.yml"
    book.write_text(PLAY)
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
    out = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{tmp_path / 'vars.json'}",
                          str(book), *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    return recap(out.stdout)


def test_modules_check_mode_idempotence_change_and_absent(tmp_path, rt, broker, topics):
    fn = Functions(rt.api_host, rt.auth)
    pkg, topic = unique_topic("mpkg"), topics("mods")
    v = {"api_host": rt.api_host, "auth": rt.auth, "pkg": pkg, "topic": topic, "bootstrap": broker.bootstrap,
         "fixtures": str(REPO / "tests" / "fixtures" / "functions")}
    # Check mode on nothing: every task would change, nothing is created.
    assert run(tmp_path, rt, broker, v, "--check")["changed"] == 7
    assert fn.get("packages", pkg) is None and fn.get("triggers", topic) is None
    assert run(tmp_path, rt, broker, v)["changed"] == 7
    action = fn.get("actions", f"{pkg}/summarize")
    assert action["exec"]["kind"] == "python:3.11" and action["limits"]["timeout"] == 10000
    wordcount = fn.get("actions", f"{pkg}/wordcount")
    assert wordcount["exec"]["binary"] is True and wordcount["exec"]["image"] == "openwhisk/dockerskeleton"
    assert fn.get("rules", f"{topic}-summarize")["status"] == "active"
    assert fn.feed("/whisk.system/messaging/kafkaFeed", "READ", f"/_/{topic}", rt.auth)["config"]["topic"] == topic
    assert run(tmp_path, rt, broker, v)["changed"] == 0               # idempotent
    # A changed parameter and a disabled rule: seen in check mode without being applied, then applied.
    changed = {**v, "scale": 3, "active": False, "bucket": "other"}
    assert run(tmp_path, rt, broker, changed, "--check")["changed"] == 3
    assert fn.get("rules", f"{topic}-summarize")["status"] == "active"
    assert run(tmp_path, rt, broker, changed)["changed"] == 3
    assert fn.get("rules", f"{topic}-summarize")["status"] == "inactive"
    assert fn.invoke(f"{pkg}/summarize", numbers=[1, 2])["sums"] == [9]
    # state=absent removes everything (the feed with its trigger), then there is nothing to do.
    gone = {**changed, "state": "absent"}
    assert run(tmp_path, rt, broker, gone)["changed"] == 6   # a loop task counts once
    assert fn.get("packages", pkg) is None and fn.get("triggers", topic) is None
    assert fn.get("actions", f"{pkg}-pipeline") is None and fn.get("rules", f"{topic}-summarize") is None


def test_modules_fail_with_one_clear_message(tmp_path, rt):
    book = tmp_path / "bad.yml"
    fixtures = REPO / "tests" / "fixtures" / "functions"
    book.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Missing shared module", "ignore_errors": True, "openwhisk_action": {
            "api_host": rt.api_host, "auth": rt.auth, "name": "bad", "kind": "blackbox",
            "src": str(fixtures / "bb-wordcount"), "include": ["lib/nope.py"]}},
        {"name": "Bad limits", "openwhisk_action": {"api_host": rt.api_host, "auth": rt.auth, "name": "bad",
                                                     "code": "def main(a):\n  return a", "limits": {"timeout": 1}}},
    ]}]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
    out = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          "-e", f"ansible_python_interpreter={sys.executable}", str(book)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "put actions/bad: HTTP 400: Time limit 1 ms below allowed threshold of 100 ms." in out.stdout
    assert (f"cannot read the code of {fixtures}/bb-wordcount: include lib/nope.py: no such file "
            f"{fixtures}/lib/nope.py") in out.stdout


@pytest.mark.parametrize("name", MODULES)
def test_module_documents_exactly_its_arguments(name, monkeypatch):
    import ansible.module_utils.basic as basic
    seen = {}

    class Capture(Exception):
        pass

    def fake(argument_spec, **kw):
        seen.update(argument_spec)
        raise Capture
    monkeypatch.setattr(basic, "AnsibleModule", fake)
    spec = importlib.util.spec_from_file_location(name, REPO / "plugins" / "modules" / f"{name}.py")
    sys.path.insert(0, str(REPO / "plugins"))
    monkeypatch.setitem(sys.modules, "ansible.module_utils.panfaas_openwhisk", _module_utils())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(Capture):
        mod.main()
    doc = yaml.safe_load(mod.DOCUMENTATION)
    fragment = yaml.safe_load(_fragment())["options"] if "panfaas_openwhisk" in \
        doc.get("extends_documentation_fragment", []) else {}
    documented = set(doc["options"]) | set(fragment)
    assert documented == set(seen), {"undocumented": set(seen) - documented, "unknown": documented - set(seen)}
    assert yaml.safe_load(mod.EXAMPLES) and yaml.safe_load(mod.RETURN)["changed"]
    assert doc["short_description"] and doc["module"] == name


def _module_utils():
    spec = importlib.util.spec_from_file_location("panfaas_openwhisk_utils",
                                                  REPO / "plugins" / "module_utils" / "panfaas_openwhisk.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def _fragment() -> str:
    spec = importlib.util.spec_from_file_location("frag", REPO / "plugins" / "doc_fragments" / "panfaas_openwhisk.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m.ModuleDocFragment.DOCUMENTATION
