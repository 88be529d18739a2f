"""Role tests: every roles/*/molecule/*/ scenario runs converge -> idempotence -> verify
in a Debian container (scripts/docker-setup builds the image and starts dockerd).

Where no Docker engine can run (not root, no dockerd), these tests are skipped and the
reason is printed (pytest -ra)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from services import BIN, REPO, free_port

SCENARIOS = sorted(REPO.glob("roles/*/molecule/*/molecule.yml"))

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="session")
def docker_ready():
    out = subprocess.run([str(REPO / "scripts" / "docker-setup")], capture_output=True, text=True)
    if out.returncode == 3:
        pytest.skip(f"role tests need a Docker engine: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, f"scripts/docker-setup failed:\n{out.stderr[-3000:]}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: f"{p.parents[2].name}/{p.parent.name}")
def test_molecule_scenario(scenario, docker_ready, tmp_path):
    role_dir = scenario.parents[2]
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "PANFAAS_REPO": str(REPO),
        "PANFAAS_PYTHON_PREFIX": sys.base_prefix,
        "MOLECULE_RUN_ID": uuid.uuid4().hex[:8],
        # Host networking: every service a scenario starts gets a port free right now.
        "MOLECULE_BROKER_PORT": str(free_port()),
        "MOLECULE_STORAGE_PORT": str(free_port()),
        "MOLECULE_ROUTER_PORT": str(free_port()),
        "MOLECULE_RUNTIME_PORT": str(free_port()),
        # Concurrent runs (several checkouts) must not share molecule's ephemeral state. Molecule
        # keys it by the role directory's name under ~/.ansible/tmp (not XDG_CACHE_HOME), so two
        # checkouts testing the same role would delete each other's inventory: give each run its own.
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "MOLECULE_EPHEMERAL_DIRECTORY": str(tmp_path / "ephemeral"),
        "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0", "NO_COLOR": "1",
    }
    out = subprocess.run([str(BIN / "molecule"), "test", "-s", scenario.parent.name], cwd=role_dir, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"molecule test failed for {role_dir.name}:\n{out.stdout[-8000:]}\n{out.stderr[-4000:]}"
    assert "idempotence" in out.stdout + out.stderr
