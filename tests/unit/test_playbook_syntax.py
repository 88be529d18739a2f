"""The playbooks and the example site inventory, checked with the real ansible-playbook and
ansible-inventory, without a cloud: syntax, which plays run for which target, the documented
knobs, the vault example, and the teardown confirmation (refused before anything is contacted).

What needs a real OpenStack (creating stacks, the Magnum cluster, the VMs) is not run here."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
import yaml

from services import BIN, REPO

SITE = REPO / "inventories" / "example-site"
LOCAL = REPO / "inventories" / "local"
PLAYBOOKS = sorted((REPO / "playbooks").glob("*.yml"))
SITE_PLAYS = {"Build the Heat stacks", "Harden the site VMs",
              "Run the Docker engine on the runner manager and the mirror", "Build the Kubernetes cluster"}


def ansible(tool: str, *args: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, env=env, cwd=REPO,
                          stdin=stdin, timeout=300)


def test_every_playbook_passes_syntax_check_against_the_example_site():
    out = ansible("ansible-playbook", "--syntax-check", "-i", str(SITE), *map(str, PLAYBOOKS))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "WARNING" not in out.stderr, out.stderr


def plays_and_hosts(inventory) -> dict[str, list[str]]:
    out = ansible("ansible-playbook", "--list-hosts", "-i", str(inventory), "playbooks/site.yml")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Could not match supplied host pattern" not in out.stderr, out.stderr
    plays, current = {}, None
    for line in out.stdout.splitlines():
        m = re.match(r"\s+play #\d+ \(([^)]*)\): (.*?)\tTAGS", line)
        if m:
            current = m.group(2)
            plays[current] = []
        elif current and line.startswith("      ") and line.strip():
            plays[current].append(line.strip())
    return plays


def test_site_yml_runs_the_site_stages_for_a_site_and_the_all_in_one_stages_for_the_all_in_one():
    local, site = plays_and_hosts(LOCAL), plays_and_hosts(SITE)
    assert set(local) == set(site) and SITE_PLAYS <= set(local)
    for play, hosts in local.items():
        assert hosts == ([] if play in SITE_PLAYS else ["localhost"]), (play, hosts)
    for play, hosts in site.items():
        # the AIO's plays find no host on a site; the final stage runs on control (and skips
        # itself until the site's OpenWhisk is set); the VM plays get their hosts at run time.
        if play in ("Build the Heat stacks", "Build the Kubernetes cluster", "Deploy the functions"):
            assert hosts == ["localhost"], (play, hosts)
        else:
            assert hosts == [], (play, hosts)


def test_the_example_site_inventory_loads_and_tells_a_site_from_the_all_in_one():
    out = ansible("ansible-inventory", "-i", str(SITE), "--list")
    assert out.returncode == 0, out.stderr
    inv = json.loads(out.stdout)
    assert inv["openstack_control"]["hosts"] == ["localhost"]
    assert "hosts" not in inv.get("aio", {})
    hostvars = inv["_meta"]["hostvars"]["localhost"]
    for knob in ("site_name", "site_cloud", "site_external_network", "site_admin_cidr", "site_vm_image",
                 "site_gitlab_flavor", "site_k8s_image", "site_k8s_labels"):
        assert knob in hostvars, knob
    assert all(isinstance(v, str) for v in hostvars["site_k8s_labels"].values()), "labels must be quoted strings"


def test_every_knob_of_the_example_site_is_documented():
    """Each top-level variable has a comment in its paragraph (the lines above it up to a blank
    line; one comment may cover a few related knobs) or on its own line."""
    undocumented = []
    for path in sorted((SITE / "group_vars").rglob("*.yml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^([a-z_][a-z0-9_]*):", line)
            if not m:
                continue
            paragraph = []
            for above in reversed(lines[:i]):
                if not above.strip():
                    break
                paragraph.append(above)
            if not any(a.startswith("#") for a in paragraph) and " # " not in line:
                undocumented.append(f"{path.relative_to(REPO)}: {m.group(1)}")
    assert undocumented == []


def test_the_heat_environment_of_the_example_site_is_the_one_the_inventory_names():
    text = (SITE / "group_vars" / "all" / "site.yml").read_text()
    assert "/env/example-site.yaml" in text and (REPO / "heat" / "env" / "example-site.yaml").exists()


def test_the_vault_example_has_no_real_secret_and_every_secret_is_mapped():
    vault = yaml.safe_load((SITE / "vault.yml.example").read_text())
    secrets = (SITE / "group_vars" / "all" / "secrets.yml").read_text()
    assert vault, "vault.yml.example is empty"
    for name, value in vault.items():
        assert name.startswith("vault_")
        assert "REPLACE" in value, f"{name} looks like a real value"
        assert "{{ " + name + " }}" in secrets, f"{name} is not used in group_vars/all/secrets.yml"
    for f in sorted((SITE / "group_vars").rglob("*.yml")):
        for name in re.findall(r"\b(vault_\w+)", f.read_text()):
            assert name in vault, f"{f.relative_to(REPO)} uses {name}, which vault.yml.example does not list"
    clouds = yaml.safe_load((SITE / "clouds.yaml.example").read_text())
    auth = clouds["clouds"]["example"]["auth"]
    assert auth["application_credential_secret"].startswith("REPLACE")
    # the example inventory must stay loadable without the vault file: it is not in group_vars
    assert not (SITE / "group_vars" / "all" / "vault.yml").exists()


@pytest.mark.parametrize("extra", [["-e", "teardown_confirm=not-the-site"], []])
def test_teardown_refuses_without_the_site_name_before_contacting_anything(extra):
    out = ansible("ansible-playbook", "-i", str(SITE), "playbooks/teardown.yml", *extra)
    assert out.returncode != 0
    assert "Not confirmed: nothing was deleted. Type 'example' at the prompt, or run with " \
           "-e teardown_confirm=example." in out.stdout, out.stdout[-3000:]
    # the refusal comes first: no task talked to OpenStack or Kubernetes
    assert "openstack" not in out.stdout.split("Stop unless the site name was confirmed")[0].lower().replace(
        "openstack_control", "")


RUNBOOKS = sorted((REPO / "docs" / "runbooks").glob("site-*.md"))


def test_the_site_runbooks_are_all_there():
    assert [p.name for p in RUNBOOKS] == ["site-bootstrap.md", "site-kubernetes-scaling.md",
                                           "site-ssh-key-rotation.md", "site-teardown.md", "site-vm-recovery.md"]


def test_the_runbooks_match_the_playbooks():
    """Every playbook, runbook, variable, task name and message a site runbook names exists."""
    defined = set()
    for path in list((SITE / "group_vars").rglob("*.yml")) + list(REPO.glob("roles/*/defaults/main.yml")):
        defined |= set(yaml.safe_load(path.read_text()) or {})
    code = "\n".join(p.read_text() for p in [*REPO.glob("playbooks/**/*.yml"), *REPO.glob("roles/*/tasks/*.yml"),
                                              *REPO.glob("src/panfaas/*.py")])
    quoted = {
        "site-bootstrap.md": ["Wait for the cluster", "Wait until the VM answers over SSH", ": wait for it",
                              "was built from cluster template"],
        "site-kubernetes-scaling.md": ["was built from cluster template", "but the settings now", "last operation"],
        "site-ssh-key-rotation.md": ["Ensure the first admin key is in the keypair"],
        "site-teardown.md": ["Not confirmed: nothing was deleted"],
        "site-vm-recovery.md": [],
    }
    for runbook in RUNBOOKS:
        text = runbook.read_text()
        for pb in set(re.findall(r"playbooks/[a-z_]+\.yml", text)):
            assert (REPO / pb).exists(), f"{runbook.name}: {pb}"
        for doc in set(re.findall(r"docs/runbooks/[a-z-]+\.md", text)):
            assert (REPO / doc).exists(), f"{runbook.name}: {doc}"
        for var in set(re.findall(r"\b((?:site|teardown)_[a-z0-9_]*[a-z0-9])\b", text)):
            assert var in defined or var in ("site_vms",), f"{runbook.name}: {var} is not a variable"
        for phrase in quoted[runbook.name]:
            assert phrase.split("`")[0] in code, f"{runbook.name}: '{phrase}' is not in the playbooks or roles"


def test_infrastructure_refuses_the_example_placeholders_before_contacting_the_cloud():
    out = ansible("ansible-playbook", "-i", str(SITE), "playbooks/infrastructure.yml", "--check")
    assert out.returncode != 0
    assert "Fill in the site settings in the inventory" in out.stdout, out.stdout[-3000:]
    assert "Ensure the first admin key is in the keypair" not in out.stdout
