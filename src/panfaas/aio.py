"""All-in-one helpers the deployment runs: preflight checks and the smoke test."""

from __future__ import annotations

import json
import socket
import tempfile
import time
import urllib.parse
import xmlrpc.client
from pathlib import Path

from .client import ClientError, Functions, Storage, load_endpoints


class PreflightError(Exception):
    pass


def supervised_programs(state_dir: Path) -> dict[str, str]:
    """{program: statename} from this state directory's supervisord, {} if it is not running."""
    sock = state_dir / "run" / "supervisor.sock"
    if not sock.exists():
        return {}
    from supervisor.xmlrpc import SupervisorTransport
    transport = SupervisorTransport(None, None, f"unix://{sock}")
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    try:
        return {p["name"]: p["statename"] for p in proxy.supervisor.getAllProcessInfo()}
    except (OSError, xmlrpc.client.Fault):
        return {}


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def preflight(state_dir: Path, ports: dict[str, int], host: str = "127.0.0.1") -> None:
    """Fail early, in one line, when a service port is taken by something that is not ours."""
    sock = state_dir / "run" / "supervisor.sock"
    if len(str(sock)) > 100:
        raise PreflightError(f"state directory path too long for a unix socket ({sock}); "
                             "set PANFAAS_STATE_DIR to a shorter path")
    ours = supervised_programs(state_dir)
    seen: dict[int, str] = {}
    for service, port in ports.items():
        if port in seen:
            raise PreflightError(f"port {port} is configured for both {seen[port]} and {service}")
        seen[port] = service
        if port_in_use(host, port) and ours.get(service) != "RUNNING":
            raise PreflightError(f"port {port} ({service}) is in use by another process: "
                                 f"free it or set aio_{service}_port")


def smoke(endpoints_file: Path, timeout: float = 120.0, directory: str = "/data/smoke") -> dict:
    """Upload a CSPAD-sized CXI file and wait for its PNG preview and a successful activation."""
    from .samples import write_cxi
    ep = load_endpoints(endpoints_file)
    storage = Storage(ep["storage"]["url"], ep["storage"]["username"], ep["storage"]["password"])
    functions = Functions(ep["runtime"]["api_host"], ep["runtime"]["auth"], ep["runtime"].get("namespace", "_"))
    name = f"smoke-{time.strftime('%Y%m%dT%H%M%S')}-{int(time.time() * 1000) % 1000:03d}.cxi"
    path = f"{directory}/{name}"
    png = path + ".png"
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / name
        write_cxi(local)
        storage.mkdir(directory)
        since = int(time.time() * 1000)
        t0 = time.monotonic()
        with open(local, "rb") as fh:
            storage.upload(path, fh)
    uploaded = time.monotonic()
    deadline = uploaded + timeout
    png_at = None
    while time.monotonic() < deadline:
        if storage.exists(png):
            png_at = time.monotonic()
            break
        time.sleep(0.05)
    if png_at is None:
        raise ClientError(f"no PNG preview at {png} within {timeout:.0f} s of the upload; "
                          "see docs/runbooks/aio.md (troubleshooting)")
    activation = None
    while time.monotonic() < deadline and activation is None:
        for act in functions.activations(name="hdf5-preview", since=since, limit=50):
            if png in json.dumps(act.get("response", {}).get("result", {})):
                activation = act
                break
        else:
            time.sleep(0.1)
    if activation is None:
        raise ClientError(f"PNG {png} appeared but no activation record of hdf5-preview mentions it")
    ok = activation["response"]["success"]
    return {"file": path, "png": png, "upload_seconds": round(uploaded - t0, 3),
            "upload_to_png_seconds": round(png_at - uploaded, 3),
            "activation": activation["activationId"], "activation_status": activation["response"]["status"],
            "success": bool(ok), "png_url": ep["storage"]["url"].rstrip("/") + urllib.parse.quote(png)}
