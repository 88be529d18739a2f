"""Running actions: warm python processes (ActionLoop protocol) and blackbox executables.

A python action runs in a child process started from `launcher.py`: init once
(import `__main__.py`), then many runs, one at a time, each one JSON line in on
stdin and one JSON line out on fd 3. Processes are kept warm per action
version and reused. A process that timed out, crashed or ran out of memory is
killed and never reused, so a misbehaving function fails its own activation
and nothing else.

Limits enforced here: timeout (the process is killed), memory (RLIMIT_AS),
result size (1 MB) and log size (per action, default 10 MB).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import os
import resource
import shutil
import signal
import sys
import time
import zipfile
from pathlib import Path

log = logging.getLogger("panfaas.runtime.executor")

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
LAUNCHER = Path(__file__).with_name("launcher.py")
MAX_RESULT_BYTES = 1024 * 1024
MB = 1024 * 1024

# Activation status codes and their names, as in OpenWhisk.
SUCCESS, APPLICATION_ERROR, DEVELOPER_ERROR, INTERNAL_ERROR = 0, 1, 2, 3
STATUS_NAMES = {0: "success", 1: "application error", 2: "action developer error",
                3: "whisk internal error"}


@dataclasses.dataclass
class Outcome:
    status: int
    result: object
    logs: list[str]
    init_ms: int | None = None
    timed_out: bool = False


def log_line(stream: str, text: str) -> str:
    now = dt.datetime.now(dt.UTC)
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return f"{ts:<30} {stream}: {text}"


class LogBuffer:
    """Collects one activation's log lines, truncated at the action's log limit."""

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.size = 0
        self.lines: list[str] = []
        self.truncated = False

    def add(self, stream: str, text: str) -> None:
        if self.truncated:
            return
        self.size += len(text) + 1
        if self.size > self.limit:
            self.truncated = True
            self.lines.append(log_line("stderr", "Logs were truncated because the total bytes size "
                                                 f"exceeds the limit of {self.limit} bytes."))
            return
        self.lines.append(log_line(stream, text))


def code_digest(exec_: dict) -> str:
    h = hashlib.sha256()
    for k in ("kind", "main", "code", "image", "binary"):
        h.update(repr(exec_.get(k)).encode())
    return h.hexdigest()[:16]


def materialize(exec_: dict, target: Path) -> Path:
    """Write the action's code into `target` (idempotent per code digest)."""
    if (target / ".ready").exists():
        return target
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    code = exec_.get("code") or ""
    if exec_.get("binary"):
        with zipfile.ZipFile(io.BytesIO(base64.b64decode(code))) as z:
            for member in z.namelist():
                dest = (tmp / member).resolve()
                if not str(dest).startswith(str(tmp.resolve())):
                    raise ValueError(f"zip member escapes the action directory: {member}")
            z.extractall(tmp)
    elif exec_.get("kind") == "blackbox":
        (tmp / "exec").write_text(code)
    else:
        (tmp / "__main__.py").write_text(code)
    if (tmp / "exec").exists():
        (tmp / "exec").chmod(0o755)
    (tmp / ".ready").touch()
    if target.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(target)
    return target


def _limit_memory(memory_mb: int):
    def apply():
        limit = memory_mb * MB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


class PythonProcess:
    """One warm python action process."""

    def __init__(self, action_dir: Path, main: str, env: dict, memory_mb: int, python: str):
        self.action_dir, self.main, self.env = action_dir, main, env
        self.memory_mb, self.python = memory_mb, python
        self.proc: asyncio.subprocess.Process | None = None
        self.results: asyncio.StreamReader | None = None
        self.buffer: LogBuffer | None = None
        self.ends: dict[str, asyncio.Event] = {}
        self.readers: list[asyncio.Task] = []
        self.dead = False

    async def start(self, timeout: float, logs: LogBuffer) -> tuple[bool, object]:
        """Start and initialise; returns (ok, error)."""
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        # The launcher moves this pipe to fd 3 itself: doing it in preexec_fn would
        # race with subprocess closing every fd not in pass_fds.
        env = dict(self.env, __PANFAAS_RESULT_FD=str(w))
        self.proc = await asyncio.create_subprocess_exec(
            self.python, "-u", str(LAUNCHER), str(self.action_dir), self.main,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, pass_fds=(w,), start_new_session=True,
            preexec_fn=_limit_memory(self.memory_mb), env=env, cwd=str(self.action_dir),
            limit=64 * MB)
        os.close(w)
        self.results = asyncio.StreamReader(limit=64 * MB)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.results),
                                     os.fdopen(r, "rb", 0))
        self.buffer = logs
        self.ends = {"stdout": asyncio.Event(), "stderr": asyncio.Event()}
        self.readers = [asyncio.create_task(self._pump("stdout", self.proc.stdout)),
                        asyncio.create_task(self._pump("stderr", self.proc.stderr))]
        try:
            line = await asyncio.wait_for(self.results.readline(), timeout)
        except TimeoutError:
            await self.kill()
            return False, "timeout"
        if not line:
            await self.kill()
            return False, {"error": "The action did not initialize and exited unexpectedly."}
        ack = json.loads(line)
        if ack.get("ok") is not True:
            await self._await_ends(1.0)
            await self.kill()
            return False, {"error": ack.get("error", "The action failed during initialization.")}
        return True, None

    async def _pump(self, stream: str, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                raw = await reader.read(MB)  # a line longer than the limit: take it in pieces
            if not raw:
                self.ends[stream].set()
                return
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if text == SENTINEL:
                self.ends[stream].set()
                continue
            if self.buffer is not None:
                self.buffer.add(stream, text)

    async def _await_ends(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.ends.values())), timeout)
        except TimeoutError:
            pass

    async def run(self, payload: dict, timeout: float, logs: LogBuffer) -> Outcome:
        self.buffer = logs
        for e in self.ends.values():
            e.clear()
        self.proc.stdin.write((json.dumps(payload) + "\n").encode())
        try:
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.results.readline(), timeout)
        except TimeoutError:
            await self.kill()
            return Outcome(DEVELOPER_ERROR, {"error": "The action exceeded its time limits of "
                                             f"{int(timeout * 1000)} milliseconds."},
                           logs.lines, timed_out=True)
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        except (ValueError, asyncio.LimitOverrunError):
            await self.kill()
            return Outcome(APPLICATION_ERROR, {"error": "The action produced a response that exceeded "
                                               f"the allowed length: more than {MAX_RESULT_BYTES} bytes."},
                           logs.lines)
        if not line:
            await self._await_ends(0.5)
            rc = await self.kill()
            if rc is not None and rc < 0 and -rc == signal.SIGKILL:
                msg = "The action exhausted its memory and was aborted."
            else:
                msg = "The action did not produce a valid response and exited unexpectedly."
            return Outcome(DEVELOPER_ERROR, {"error": msg}, logs.lines)
        await self._await_ends(2.0)
        return interpret(line, logs.lines)

    async def kill(self) -> int | None:
        self.dead = True
        if self.proc and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        rc = None
        if self.proc:
            try:
                rc = await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                pass
        for t in self.readers:
            t.cancel()
        return rc


def interpret(line: bytes, logs: list[str]) -> Outcome:
    """The run response -> activation status, as OpenWhisk's invoker decides it."""
    if len(line) > MAX_RESULT_BYTES:
        return Outcome(APPLICATION_ERROR, {"error": "The action produced a response that exceeded the "
                                           f"allowed length: {len(line)} > {MAX_RESULT_BYTES} bytes."},
                       logs)
    try:
        res = json.loads(line)
    except json.JSONDecodeError:
        return Outcome(DEVELOPER_ERROR, {"error": "The action did not produce a valid JSON or JSON "
                                         f"Array response: {line[:200]!r}"}, logs)
    if isinstance(res, dict) and res.get("__launcher_oom__"):
        return Outcome(DEVELOPER_ERROR, {"error": "The action exhausted its memory and was aborted."}, logs)
    if isinstance(res, dict) and "__launcher_invalid__" in res:
        return Outcome(DEVELOPER_ERROR, {"error": "The action did not produce a valid JSON or JSON "
                                         f"Array response: {res['__launcher_invalid__']}"}, logs)
    if isinstance(res, list):
        return Outcome(SUCCESS, res, logs)
    if not isinstance(res, dict):
        return Outcome(DEVELOPER_ERROR, {"error": "The action did not return a dictionary or array."}, logs)
    if "error" in res:
        return Outcome(APPLICATION_ERROR, {"error": res["error"]}, logs)
    return Outcome(SUCCESS, res, logs)


class Executor:
    """Keeps warm processes per action version and runs activations on them."""

    def __init__(self, workdir: Path, api_host: str, python: str = sys.executable,
                 keep_warm: int = 4):
        self.workdir = Path(workdir)
        self.api_host = api_host
        self.python = python
        self.keep_warm = keep_warm
        self.warm: dict[str, list[PythonProcess]] = {}

    def base_env(self, meta: dict) -> dict:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": os.environ.get("HOME", "/tmp"), "PYTHONUNBUFFERED": "1",
               # one thread per BLAS pool: many small processes, and RLIMIT_AS counts thread stacks
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "__OW_API_HOST": self.api_host}
        for k, v in meta.items():
            env["__OW_" + k.upper()] = v if isinstance(v, str) else json.dumps(v)
        return env

    async def execute(self, action: dict, args: dict, meta: dict) -> Outcome:
        exec_ = action["exec"]
        limits = action.get("limits", {})
        timeout = limits.get("timeout", 60000) / 1000.0
        memory = int(limits.get("memory", 256))
        logs = LogBuffer(int(limits.get("logs", 10)) * MB)
        digest = code_digest(exec_)
        action_dir = self.workdir / f"{action['namespace'].replace('/', '_')}_{action['name']}_{digest}"
        try:
            await asyncio.to_thread(materialize, exec_, action_dir)
        except Exception as e:
            return Outcome(DEVELOPER_ERROR, {"error": f"The action failed during initialization: {e}"}, [])
        if exec_.get("kind") == "blackbox" or (action_dir / "exec").exists() and not \
                (action_dir / "__main__.py").exists():
            return await self.run_blackbox(action_dir, args, meta, timeout, memory, logs)
        payload = {"value": args, **meta}
        key = f"{digest}:{memory}"
        pool = self.warm.setdefault(key, [])
        init_ms = None
        proc = None
        while pool:
            cand = pool.pop()
            if not cand.dead and cand.proc.returncode is None:
                proc = cand
                break
        if proc is None:
            t0 = time.monotonic()
            proc = PythonProcess(action_dir, exec_.get("main") or "main", self.base_env(meta),
                                 memory, self.python)
            ok, err = await proc.start(timeout, logs)
            init_ms = int((time.monotonic() - t0) * 1000)
            if not ok:
                if err == "timeout":
                    return Outcome(DEVELOPER_ERROR, {"error": "The action exceeded its time limits of "
                                                     f"{int(timeout * 1000)} milliseconds during "
                                                     "initialization."}, logs.lines, init_ms, True)
                return Outcome(DEVELOPER_ERROR, err, logs.lines, init_ms)
            timeout = max(timeout - init_ms / 1000.0, 0.1)
        outcome = await proc.run(payload, timeout, logs)
        outcome.init_ms = init_ms
        if not proc.dead and len(pool) < self.keep_warm:
            pool.append(proc)
        elif not proc.dead:
            await proc.kill()
        return outcome

    async def run_blackbox(self, action_dir: Path, args: dict, meta: dict, timeout: float,
                           memory: int, logs: LogBuffer) -> Outcome:
        """dockerskeleton's protocol: JSON args as argv[1] and on stdin; last stdout line is the result."""
        payload = json.dumps(args)
        argv = [str(action_dir / "exec")] + ([payload] if len(payload) <= 131071 else [])
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.base_env(meta), cwd=str(action_dir),
            start_new_session=True, preexec_fn=_limit_memory(memory), limit=64 * MB)
        out_lines: list[str] = []

        async def pump(stream, name):
            async for raw in stream:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                if name == "stdout":
                    out_lines.append(text)
                else:
                    logs.add("stderr", text)

        readers = [asyncio.create_task(pump(proc.stdout, "stdout")),
                   asyncio.create_task(pump(proc.stderr, "stderr"))]
        try:
            proc.stdin.write(payload.encode())
            await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            await asyncio.wait_for(asyncio.gather(proc.wait(), *readers), timeout)
        except TimeoutError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            for t in readers:
                t.cancel()
            for line in out_lines:
                logs.add("stdout", line)
            return Outcome(DEVELOPER_ERROR, {"error": "The action exceeded its time limits of "
                                             f"{int(timeout * 1000)} milliseconds."}, logs.lines,
                           timed_out=True)
        last = out_lines.pop() if out_lines else ""
        for line in out_lines:
            logs.add("stdout", line)
        try:
            res = json.loads(last)
        except json.JSONDecodeError:
            res = None
        if not isinstance(res, (dict, list)):
            logs.add("stdout", last)
            return Outcome(DEVELOPER_ERROR, {"error": "The action did not return a dictionary or array."},
                           logs.lines)
        return interpret(last.encode(), logs.lines)

    async def close(self) -> None:
        for pool in self.warm.values():
            for p in pool:
                await p.kill()
        self.warm.clear()
