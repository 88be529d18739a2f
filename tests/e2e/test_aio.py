"""The all-in-one as a user gets it: ansible-playbook site.yml, twice, then uploads with curl.

Every service runs for real, on loopback ports picked free for this run, with
its state in a temporary directory (the default .aio/ and ports are untouched).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time

import pytest
import requests

from panfaas.client import Functions, Storage
from panfaas.samples import write_cxi
from services import REPO, endpoints, free_port, playbook, recap, wait_until

pytestmark = pytest.mark.slow


def test_first_run_deploys_and_writes_private_endpoints(aio):
    assert recap(aio["first"].stdout)["changed"] > 0
    ep_file = aio["state"] / "endpoints.json"
    assert oct(ep_file.stat().st_mode & 0o777) == "0o600"
    ep = endpoints(aio)
    assert ep["broker"]["bootstrap"] == f"127.0.0.1:{aio['ports']['broker']}"
    assert ep["storage"]["url"] == f"http://127.0.0.1:{aio['ports']['storage']}"
    assert re.fullmatch(r"[0-9a-f-]{36}:\w+", ep["runtime"]["auth"])
    assert ep["runtime"]["namespace"] == "guest"
    secrets_dir = aio["state"] / "secrets"
    assert oct(secrets_dir.stat().st_mode & 0o777) == "0o700"


def test_second_run_changes_nothing(aio):
    again = playbook("site.yml", aio["state"], aio["ports"])
    assert recap(again.stdout)["changed"] == 0, again.stdout[-4000:]


def test_check_mode_on_a_converged_host_reports_no_change(aio):
    out = playbook("site.yml", aio["state"], aio["ports"], "--check")
    assert recap(out.stdout)["changed"] == 0, out.stdout[-4000:]


def test_verify_playbook_reports_upload_to_png_time(aio):
    out = playbook("verify.yml", aio["state"], aio["ports"])
    assert "smoke test            PASSED" in out.stdout
    seconds = float(re.search(r"upload to PNG\s+([\d.]+) s", out.stdout).group(1))
    assert seconds > 0
    assert recap(out.stdout)["changed"] == 0


def wait_png(storage: Storage, path: str, timeout: float = 60) -> bytes:
    wait_until(lambda: storage.exists(path), timeout, what=path)
    return storage.download(path)


def test_curl_upload_yields_a_png(aio, tmp_path):
    ep = endpoints(aio)
    f = tmp_path / "curl-run.cxi"
    write_cxi(f, seed=3)
    st = ep["storage"]
    out = subprocess.run(["curl", "-sS", "-u", f"{st['username']}:{st['password']}", "-T", str(f),
                          "-o", "/dev/null", "-w", "%{http_code}", st["url"] + "/data/curl-run.cxi"],
                         capture_output=True, text=True)
    assert out.stdout in ("201", "204"), out.stderr
    png = wait_png(Storage.from_endpoints(aio["state"] / "endpoints.json"), "/data/curl-run.cxi.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_file_fails_its_own_activation_and_the_next_good_one_works(aio, tmp_path):
    ep_path = aio["state"] / "endpoints.json"
    storage, functions = Storage.from_endpoints(ep_path), Functions.from_endpoints(ep_path)
    since = int(time.time() * 1000)
    storage.upload("/data/broken.h5", b"this is not HDF5 at all")

    def failed_activation():
        for act in functions.activations(name="hdf5-preview", since=since):
            if "broken.h5" in json.dumps(act["response"]):
                return act
        return None

    act = wait_until(failed_activation, 60, what="activation for broken.h5")
    assert act["response"]["status"] == "application error"
    assert "not a readable HDF5 file" in act["response"]["result"]["error"]
    assert not storage.exists("/data/broken.h5.png")
    good = tmp_path / "after-broken.cxi"
    write_cxi(good, seed=4)
    storage.upload("/data/after-broken.cxi", good.read_bytes())
    assert wait_png(storage, "/data/after-broken.cxi.png")[:4] == b"\x89PNG"


def test_broken_rule_fails_with_one_clear_line(aio):
    out = playbook("router.yml", aio["state"], aio["ports"], "-e",
                   json.dumps({"platform_rules": [{"target": "x", "path-predicate": {"matching": "("}}]}),
                   check=False)
    assert out.returncode != 0
    assert "files[0].path-predicate.matching: invalid regular expression" in out.stdout
    # The running router kept its good configuration.
    r = requests.get(f"http://127.0.0.1:{aio['ports']['router']}/healthz")
    assert r.status_code == 200


def test_port_taken_by_another_process_fails_preflight(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        ports = {"broker": taken, "storage": free_port(), "router": free_port(), "runtime": free_port()}
        out = playbook("preflight.yml", tmp_path / "state", ports, check=False)
    assert out.returncode != 0
    assert f"port {taken} (broker) is in use by another process: free it or set aio_broker_port" in \
        " ".join(out.stdout.split())


def test_make_status_and_stop_then_redeploy(aio):
    env = {**os.environ, "PANFAAS_STATE_DIR": str(aio["state"])}
    status = subprocess.run(["make", "-s", "status"], cwd=REPO, env=env, capture_output=True, text=True)
    for program in ("broker", "storage", "router", "runtime"):
        assert re.search(rf"^{program}\s+RUNNING", status.stdout, re.M), status.stdout
    stop = subprocess.run(["make", "-s", "stop"], cwd=REPO, env=env, capture_output=True, text=True)
    assert stop.returncode == 0
    status = subprocess.run(["make", "-s", "status"], cwd=REPO, env=env, capture_output=True, text=True)
    assert "not running" in status.stdout
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{aio['ports']['runtime']}/healthz", timeout=2)
    # Deploying again brings everything back (the broker's topics included: tansu forgot them),
    # and the event path works again; later tests share this deployment.
    again = playbook("site.yml", aio["state"], aio["ports"])
    assert recap(again.stdout)["changed"] > 0
    out = playbook("verify.yml", aio["state"], aio["ports"])
    assert "smoke test            PASSED" in out.stdout
