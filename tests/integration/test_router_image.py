"""The router's container image (images/event-router): built with Docker from the local Debian
base image, then run with host networking against the test session's broker.

Skipped, with the reason, where no Docker engine runs or the local base image is missing
(scripts/docker-setup starts dockerd and builds panfaas/debian:bookworm)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest
import requests
import yaml

from panfaas import events
from services import REPO, consume, free_port, produce, router_config, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE = "panfaas/debian:bookworm"
TAG = "panfaas/event-router:pytest"   # kept between runs: Docker's layer cache makes rebuilds quick


@pytest.fixture(scope="module")
def image():
    if not shutil.which("docker"):
        pytest.skip("the router image test needs Docker: no docker command")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if info.returncode != 0:
        pytest.skip(f"the router image test needs a running Docker engine (scripts/docker-setup): "
                    f"{(info.stderr.strip().splitlines() or ['docker info failed'])[-1]}")
    if subprocess.run(["docker", "image", "inspect", BASE], capture_output=True).returncode != 0:
        pytest.skip(f"base image {BASE} missing: scripts/docker-setup builds it")
    out = subprocess.run([str(REPO / "images" / "event-router" / "build"), TAG, "--network", "host",
                          "--build-arg", f"BASE_IMAGE={BASE}"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"image build failed:\n{out.stdout[-4000:]}\n{out.stderr[-3000:]}"
    return TAG


def docker_run(*args, **kw):
    return subprocess.run(["docker", "run", "--rm", "--network", "host", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_image_runs_as_an_unprivileged_user_and_checks_configs(image, tmp_path):
    conf = router_config("127.0.0.1:9", None, [{"target": "t", "path-predicate": {"matching": "/data/.*"},
                                                "urls": {"read": {}}}], source_topic="billing", dead_letter="d")
    (tmp_path / "router.yml").write_text(yaml.safe_dump(conf))
    os.chmod(tmp_path / "router.yml", 0o644)
    os.chmod(tmp_path, 0o755)                    # the image's user is not root
    mount = ["-v", f"{tmp_path}:/etc/panfaas:ro"]
    assert docker_run("--entrypoint", "id", image, "-u").stdout.strip() == "10001"
    ok = docker_run(*mount, image, "check-config", "/etc/panfaas/router.yml")
    assert ok.returncode == 0 and "ok (1 rule" in ok.stdout, ok.stderr
    ev = json.dumps(events.billing_transfer(path="/data/x.h5", pnfsid="00", size=1, is_write=True, client="::1",
                                            client_port=1, user="u", uid=1, gid=1, session="s:1", transfer_ms=1))
    dry = docker_run(*mount, image, "dry-run", "/etc/panfaas/router.yml", "--event", ev)
    assert json.loads(dry.stdout)["topic"] == "t", dry.stderr
    bad = docker_run(image)                                  # no configuration mounted
    assert bad.returncode == 2 and "cannot read configuration" in bad.stderr


def test_image_routes_events(image, broker, topics, tmp_path):
    source, tasks, dead = topics("billing", "tasks", "dead")
    port = free_port()
    conf = router_config(broker.bootstrap, None, [{"target": tasks, "path-predicate": {"matching": "/data/.*"},
                                                   "urls": {"read": {}}}], source_topic=source, dead_letter=dead)
    (tmp_path / "router.yml").write_text(yaml.safe_dump(conf))
    os.chmod(tmp_path / "router.yml", 0o644)
    os.chmod(tmp_path, 0o755)
    name = f"panfaas-router-test-{uuid.uuid4().hex[:8]}"
    run = subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", "host",
                          "-e", f"PANFAAS_ROUTER__LISTEN__PORT={port}", "-v", f"{tmp_path}:/etc/panfaas:ro", image],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, 60, what="healthz")
        produce(broker.bootstrap, source, [events.billing_transfer(
            path="/data/in-a-container.h5", pnfsid="00", size=1, is_write=True, client="127.0.0.1", client_port=1,
            user="u", uid=1, gid=1, session="s:1", transfer_ms=1)])
        got = consume(broker.bootstrap, tasks, 1, timeout=20)
        assert got and got[0]["value"]["event"]["path"] == "/data/in-a-container.h5"
        stop = subprocess.run(["docker", "stop", "-t", "10", name], capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
