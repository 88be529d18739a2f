"""The all-in-one deployment shared by every e2e test: site.yml run once per session, on
loopback ports picked free for this run, with its state in a temporary directory (the
default .aio/ and ports are untouched)."""

from __future__ import annotations

import subprocess

import pytest

from services import BIN, free_port, playbook


@pytest.fixture(scope="session")
def aio(tmp_path_factory):
    state = tmp_path_factory.mktemp("aio") / "state"
    ports = {"broker": free_port(), "storage": free_port(), "router": free_port(), "runtime": free_port()}
    first = playbook("site.yml", state, ports)
    yield {"state": state, "ports": ports, "first": first}
    subprocess.run([str(BIN / "supervisorctl"), "-c", str(state / "supervisord.conf"), "shutdown"],
                   capture_output=True)
