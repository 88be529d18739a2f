"""Idempotent stacks (panfaas.heatstack and the heat_stack_plan module used by the
openstack_stack role).

There is no cloud here: the `current` stacks are records shaped like what
openstack.cloud.stack_info returns (openstacksdk's Stack.to_dict()). The role's calls to Heat
itself (stack_info, stack) need a real OpenStack and are not run in make test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from panfaas import heatstack
from services import BIN, REPO


@pytest.fixture
def heat_dir(tmp_path):
    root = tmp_path / "heat"
    shutil.copytree(REPO / "heat", root)
    return root


def stack(tag: str | None, status: str = "CREATE_COMPLETE", outputs: dict | None = None) -> dict:
    return {"id": "0b7c", "name": "site-gitlab", "status": status, "tags": [tag] if tag else [],
            "outputs": [{"output_key": k, "output_value": v, "description": ""} for k, v in (outputs or {}).items()]}


def test_the_digest_covers_nested_templates_get_file_files_environments_and_parameters(heat_dir):
    tmpl, env = heat_dir / "gitlab.yaml", heat_dir / "env" / "example-site.yaml"
    files = {p.name for p in heatstack.referenced_files(tmpl)}
    assert files == {"gitlab.yaml", "server.yaml", "cloud-config.cfg"}
    params = {"site_name": "ex", "flavor": "m1.large"}
    base = heatstack.digest(tmpl, [env], params)
    assert heatstack.digest(tmpl, [env], dict(reversed(params.items()))) == base  # order does not matter
    changes = []
    changes.append(heatstack.digest(tmpl, [env], {**params, "flavor": "m1.xlarge"}))
    changes.append(heatstack.digest(tmpl, [], params))
    (heat_dir / "files" / "cloud-config.cfg").write_text("#cloud-config\n{}\n")
    changes.append(heatstack.digest(tmpl, [env], params))
    (heat_dir / "server.yaml").write_text((heat_dir / "server.yaml").read_text() + "\n# a comment\n")
    changes.append(heatstack.digest(tmpl, [env], params))
    env.write_text(env.read_text() + "\n# a comment\n")
    changes.append(heatstack.digest(tmpl, [env], params))
    assert len({base, *changes}) == 6


def test_plan_creates_updates_or_leaves_alone():
    d = "ab" * 32
    tag = heatstack.tag(d)
    assert tag == "panfaas-digest-" + "ab" * 16 and len(tag) < 80 and "," not in tag
    assert heatstack.plan("s", None, d).action == "create"
    assert heatstack.plan("s", stack(tag), d).action == "none"
    assert heatstack.plan("s", stack(tag, "UPDATE_COMPLETE"), d).action == "none"
    changed = heatstack.plan("s", stack(heatstack.tag("cd" * 32)), d)
    assert (changed.action, changed.reason) == ("update", "the template, environment or parameters changed")
    assert heatstack.plan("s", stack(None), d).reason == "it carries no digest tag yet"
    failed = heatstack.plan("s", stack(tag, "UPDATE_FAILED"), d)
    assert (failed.action, failed.reason) == ("update", "its last operation ended UPDATE_FAILED")
    for status in ("UPDATE_IN_PROGRESS", "DELETE_FAILED"):
        with pytest.raises(heatstack.StackStateError, match=f"stack s is {status}"):
            heatstack.plan("s", stack(tag, status), d)


def test_outputs_and_placeholders(heat_dir):
    assert heatstack.outputs(stack("t", outputs={"address": "192.0.2.7"})) == {"address": "192.0.2.7"}
    ph = heatstack.placeholder_outputs(heat_dir / "network.yaml", "ex-network")
    assert ph["network_id"] == "(ex-network:network_id, known once the stack exists)"
    assert set(ph) >= {"subnet_id", "ssh_security_group", "web_security_group", "mirror_security_group"}


def run_play(tmp_path, tasks: list[dict], check: bool = False) -> subprocess.CompletedProcess:
    """Run tasks in a real ansible-playbook on localhost."""
    (tmp_path / "play.yml").write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={BIN / 'python'}", str(tmp_path / "play.yml")]
    cmd += ["--check"] if check else []
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def run_module(tmp_path, tasks: list[dict], check: bool = False) -> list[dict]:
    """Run tasks in a real ansible-playbook on localhost; return each task's registered result."""
    regs = []
    for i, t in enumerate(tasks):
        t["register"] = f"r{i}"
        regs.append(f"r{i}")
    out = run_play(tmp_path, tasks + [
        {"ansible.builtin.copy": {"dest": str(tmp_path / "out.json"),
                                  "content": "{{ [" + ", ".join(regs) + "] | to_json }}"},
         "check_mode": False}], check)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    return json.loads((tmp_path / "out.json").read_text())


def test_the_module_reports_nothing_to_do_for_an_unchanged_stack(tmp_path, heat_dir):
    args = {"name": "ex-network", "template": str(heat_dir / "network.yaml"),
            "environment": [str(heat_dir / "env" / "example-site.yaml")],
            "parameters": {"name_prefix": "ex", "external_network": "public", "admin_cidr": "192.0.2.0/24"}}
    d = heatstack.digest(heat_dir / "network.yaml", [heat_dir / "env" / "example-site.yaml"], args["parameters"])
    fresh, same, other = run_module(tmp_path, [
        {"heat_stack_plan": {**args, "current": None}},
        {"heat_stack_plan": {**args, "current": stack(heatstack.tag(d), outputs={"network_id": "n1"})}},
        {"heat_stack_plan": {**args, "parameters": {**args["parameters"], "admin_cidr": "198.51.100.0/24"},
                             "current": stack(heatstack.tag(d))}},
    ], check=True)
    assert (fresh["action"], fresh["changed"]) == ("create", False)
    assert fresh["outputs"]["network_id"].startswith("(ex-network:network_id")
    assert (same["action"], same["changed"], same["outputs"]) == ("none", False, {"network_id": "n1"})
    assert other["action"] == "update" and other["tag"] != same["tag"]


def test_the_module_fails_clearly_while_a_stack_is_busy(tmp_path, heat_dir):
    out = run_play(tmp_path, [{"heat_stack_plan": {
        "name": "ex-network", "template": str(heat_dir / "network.yaml"),
        "current": stack("x", "UPDATE_IN_PROGRESS")}}])
    assert out.returncode != 0
    assert "stack ex-network is UPDATE_IN_PROGRESS: wait for it to finish" in out.stdout
