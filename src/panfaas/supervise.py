"""Supervisord for the all-in-one: start it, and keep programs in their desired state.

Every all-in-one service is a supervisord program whose `[program:x]` file
lives in `<state>/supervisor.d/`. `ensure_program` is what the
`supervisor_program` Ansible module calls: it writes the file, applies it
(reload, add, restart) and restarts the program when one of its watched
configuration files changed, all idempotently and with a check mode.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import time
import xmlrpc.client
from pathlib import Path

RUNNING_STATES = ("RUNNING",)


def paths(state_dir: str | Path) -> dict[str, Path]:
    s = Path(state_dir)
    return {"conf": s / "supervisord.conf", "programs": s / "supervisor.d",
            "sock": s / "run" / "supervisor.sock", "pid": s / "run" / "supervisord.pid",
            "log": s / "log"}


def proxy(state_dir: str | Path):
    from supervisor.xmlrpc import SupervisorTransport
    transport = SupervisorTransport(None, None, f"unix://{paths(state_dir)['sock']}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def is_running(state_dir: str | Path) -> bool:
    if not paths(state_dir)["sock"].exists():
        return False
    try:
        return proxy(state_dir).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Fault):
        return False


def start_supervisord(state_dir: str | Path, bin_dir: str | Path, timeout: float = 15.0) -> bool:
    """Start supervisord for this state directory unless it runs; True if it was started."""
    if is_running(state_dir):
        return False
    p = paths(state_dir)
    subprocess.run([str(Path(bin_dir) / "supervisord"), "-c", str(p["conf"])], check=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(state_dir):
            return True
        time.sleep(0.1)
    raise RuntimeError(f"supervisord did not come up; see {p['log'] / 'supervisord.log'}")


def digest(files: list[str]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.encode())
        try:
            h.update(Path(f).read_bytes())
        except FileNotFoundError:
            h.update(b"<missing>")
    return h.hexdigest()[:16]


def program_conf(name: str, command: list[str], directory: str, environment: dict[str, str],
                 log_dir: str, watch_digest: str, stopwaitsecs: int = 15) -> str:
    env = ",".join(f'{k}="{v}"' for k, v in sorted(environment.items()))
    lines = [
        "# Managed by the supervisor_program Ansible module; edits are overwritten.",
        f"# config-digest: {watch_digest}",
        f"[program:{name}]",
        f"command={shlex.join(command)}",
        f"directory={directory}",
        "autostart=true",
        "autorestart=true",
        "startsecs=1",
        "startretries=5",
        f"stopwaitsecs={stopwaitsecs}",
        "stopasgroup=true",
        "killasgroup=true",
        f"stdout_logfile={log_dir}/{name}.log",
        "stdout_logfile_maxbytes=20MB",
        "stdout_logfile_backups=3",
        "redirect_stderr=true",
    ]
    if env:
        lines.append(f"environment={env}")
    return "\n".join(lines) + "\n"


def _info(server, name: str) -> dict | None:
    try:
        return server.supervisor.getProcessInfo(name)
    except xmlrpc.client.Fault:
        return None


def _wait_running(server, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _info(server, name) or {}
        if info.get("statename") == "RUNNING":
            return
        if info.get("statename") in ("FATAL", "EXITED", "STOPPED"):
            break  # BACKOFF is supervisord retrying: keep waiting for that
        time.sleep(0.2)
    info = _info(server, name) or {}
    raise RuntimeError(f"program {name} is {info.get('statename', 'missing')}, not RUNNING: "
                       f"see {info.get('stdout_logfile', 'its log')}")


def ensure_program(state_dir: str, name: str, command: list[str], directory: str,
                   environment: dict[str, str] | None = None, watch: list[str] | None = None,
                   state: str = "started", check_mode: bool = False) -> dict:
    """Make the program's file and process match; returns {"changed": bool, "actions": [...]}."""
    p = paths(state_dir)
    conf_file = p["programs"] / f"{name}.conf"
    if not is_running(state_dir):
        raise RuntimeError(f"supervisord is not running for {state_dir}")
    server = proxy(state_dir)
    actions: list[str] = []
    if state == "absent":
        if _info(server, name):
            actions.append("removed")
            if not check_mode:
                if _info(server, name)["statename"] in RUNNING_STATES:
                    server.supervisor.stopProcess(name)
                server.supervisor.removeProcessGroup(name)
        if conf_file.exists():
            actions.append("deleted config")
            if not check_mode:
                conf_file.unlink()
        return {"changed": bool(actions), "actions": actions}

    wanted = program_conf(name, command, directory, environment or {}, str(p["log"]),
                          digest(watch or []))
    current = conf_file.read_text() if conf_file.exists() else None
    if current != wanted:
        actions.append("configured" if current is None else "reconfigured")
        if check_mode:
            return {"changed": True, "actions": actions}
        tmp = conf_file.with_suffix(".tmp")
        tmp.write_text(wanted)
        os.replace(tmp, conf_file)
        added, changed, _removed = server.supervisor.reloadConfig()[0]
        if name in changed:
            if (_info(server, name) or {}).get("statename") in RUNNING_STATES:
                server.supervisor.stopProcess(name)
            server.supervisor.removeProcessGroup(name)
            server.supervisor.addProcessGroup(name)
        elif name in added or _info(server, name) is None:
            server.supervisor.addProcessGroup(name)
        _wait_running(server, name)
        return {"changed": True, "actions": actions}
    info = _info(server, name)
    if info is None:
        actions.append("added")
        if not check_mode:
            server.supervisor.reloadConfig()
            server.supervisor.addProcessGroup(name)
    elif state == "restarted":
        actions.append("restarted")
        if not check_mode:
            if info["statename"] in RUNNING_STATES:
                server.supervisor.stopProcess(name)
            server.supervisor.startProcess(name)
    elif state == "started" and info["statename"] not in RUNNING_STATES:
        actions.append("started")
        if not check_mode:
            if info["statename"] in ("STARTING", "BACKOFF"):
                pass  # supervisord is already bringing it up
            else:
                server.supervisor.startProcess(name, False)
    elif state == "stopped" and info["statename"] in RUNNING_STATES:
        actions.append("stopped")
        if not check_mode:
            server.supervisor.stopProcess(name)
    if actions and not check_mode and state != "stopped":
        _wait_running(server, name)
    return {"changed": bool(actions), "actions": actions}
