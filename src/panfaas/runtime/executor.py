"""Running actions: warm python processes (ActionLoop protocol) and blackbox executables.

A python action runs in a child process started from `launcher.py`: init once (import
`__main__.py`, acknowledge `{"ok": true}` on fd 3), then many runs, one at a time, each one
JSON line in on stdin and one JSON line out on fd 3, the log sentinel after each. Processes
are kept warm per action version and reused. A blackbox action is dockerskeleton's
protocol: `exec` runs once per activation with the JSON arguments as argv[1] and on stdin,
and the last line of its stdout is the result.

Limits, enforced here:
- timeout: the process (group) is killed; "The action exceeded its time limits of N milliseconds."
- memory: RLIMIT_AS of the action's process; a MemoryError, or the kernel's SIGKILL, is
  "The action exhausted its memory and was aborted." and the process is not reused
- result: 1 MB, larger is an application error with the truncated response
- logs: the action's `logs` limit (10 MB by default), then a truncation warning
A process that timed out, crashed or ran out of memory is killed and never reused, and it
dies with the runtime (PR_SET_PDEATHSIG), so a misbehaving action fails its own activation
and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ctypes
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
import tempfile
import time
import zipfile
from pathlib import Path

log = logging.getLogger("panfaas.runtime.executor")

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
LAUNCHER = Path(__file__).with_name("launcher.py")
MAX_RESULT_BYTES = 1024 * 1024
MAX_ARG_STRLEN = 131071          # dockerskeleton leaves argv[1] out beyond this
MB = 1024 * 1024
PIPE_LIMIT = 64 * MB             # longest line read from an action (result or log)

# Activation status codes and their names, as in OpenWhisk.
SUCCESS, APPLICATION_ERROR, DEVELOPER_ERROR, INTERNAL_ERROR = 0, 1, 2, 3
STATUS_NAMES = {0: "success", 1: "application error", 2: "action developer error",
                3: "whisk internal error"}

OOM = "The action exhausted its memory and was aborted."
ABNORMAL_RUN = "The action did not produce a valid response and exited unexpectedly."
ABNORMAL_INIT = "The action did not initialize and exited unexpectedly."
NOT_DICT = "The action did not return a dictionary or array."
OOM_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


def timed_out(ms: int, init: bool = False) -> str:
    return f"The action exceeded its time limits of {ms} milliseconds" + (" during initialization." if init else ".")


def init_failed(detail: str = "") -> str:
    return "The action failed during initialization" + (f": {detail}" if detail else ".")


@dataclasses.dataclass
class Outcome:
    status: int
    result: object
    logs: list[str]
    init_ms: int | None = None
    timed_out: bool = False


def log_line(stream: str, text: str) -> str:
    """OpenWhisk's activation log line: `f"$time%-30s $stream: $log"`."""
    now = dt.datetime.now(dt.UTC)
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}Z"
    return f"{ts:<30} {stream}: {text}"


class LogBuffer:
    """One activation's log lines, truncated at the action's log limit with OpenWhisk's warning."""

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.size = 0
        self.lines: list[str] = []
        self.truncated = False

    def add(self, stream: str, text: str) -> None:
        if self.truncated:
            return
        self.size += len(text.encode("utf-8", "replace")) + 1
        if self.size > self.limit:
            self.truncated = True
            self.lines.append(log_line("stderr", "Logs were truncated because the total bytes size exceeds "
                                                 f"the limit of {self.limit} bytes."))
            return
        self.lines.append(log_line(stream, text))


def code_digest(exec_: dict) -> str:
    h = hashlib.sha256()
    for k in ("kind", "main", "code", "image", "binary"):
        h.update(repr(exec_.get(k)).encode())
    return h.hexdigest()[:16]


def materialize(exec_: dict, target: Path) -> Path:
    """Write the action's code into `target` once per code digest: a zip is extracted, python
    source becomes `__main__.py`, blackbox source `exec` (dockerskeleton's /action/exec)."""
    if (target / ".ready").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=target.parent))
    code = exec_.get("code") or ""
    if exec_.get("binary"):
        try:
            archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(code)))
        except (ValueError, zipfile.BadZipFile) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ValueError(f"the code is not a valid zip file ({e})") from None
        with archive:
            for member in archive.namelist():
                if not (tmp / member).resolve().is_relative_to(tmp.resolve()):
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise ValueError(f"zip member escapes the action directory: {member}")
            archive.extractall(tmp)
    elif exec_.get("kind") == "blackbox":
        (tmp / "exec").write_text(code)
    else:
        (tmp / "__main__.py").write_text(code)
    if (tmp / "exec").exists():
        (tmp / "exec").chmod(0o755)
    (tmp / ".ready").touch()
    try:
        tmp.rename(target)
    except OSError:  # another activation of the same version got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


_libc = None


def _child_setup(memory_mb: int):
    """Runs in the child before exec: the memory limit, and death with the runtime."""
    def apply():
        limit = memory_mb * MB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if _libc is not None:
            _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a kill -9'd runtime takes its actions along
    return apply


if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


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
        self.idle_since = time.monotonic()

    async def start(self, timeout: float, logs: LogBuffer, limit_ms: int) -> Outcome | None:
        """Start and initialise; None when ready, else the failed activation's outcome."""
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        # The launcher moves this pipe to fd 3 itself: doing it in preexec_fn would race with
        # subprocess closing every fd not in pass_fds.
        env = dict(self.env, __PANFAAS_RESULT_FD=str(w))
        try:
            self.proc = await asyncio.create_subprocess_exec(
                self.python, "-u", str(LAUNCHER), str(self.action_dir), self.main,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=(w,), start_new_session=True,
                preexec_fn=_child_setup(self.memory_mb), env=env, cwd=str(self.action_dir),
                limit=PIPE_LIMIT)
        finally:
            os.close(w)
        self.results = asyncio.StreamReader(limit=PIPE_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.results), os.fdopen(r, "rb", 0))
        self.buffer = logs
        self.ends = {"stdout": asyncio.Event(), "stderr": asyncio.Event()}
        self.readers = [asyncio.create_task(self._pump("stdout", self.proc.stdout)),
                        asyncio.create_task(self._pump("stderr", self.proc.stderr))]
        try:
            line = await asyncio.wait_for(self.results.readline(), timeout)
        except TimeoutError:
            await self.kill()
            return Outcome(DEVELOPER_ERROR, {"error": timed_out(limit_ms, init=True)}, logs.lines, timed_out=True)
        if not line:
            await self._await_ends(1.0)
            rc = await self.kill()
            msg = OOM if rc == -signal.SIGKILL else ABNORMAL_INIT
            return Outcome(DEVELOPER_ERROR, {"error": msg}, logs.lines)
        try:
            ack = json.loads(line)
        except json.JSONDecodeError:
            ack = {"error": init_failed(line.decode("utf-8", "replace")[:500])}
        if ack.get("ok") is not True:
            await self._await_ends(1.0)
            await self.kill()
            err = OOM if ack.get("oom") else init_failed(str(ack.get("error", "")))
            return Outcome(DEVELOPER_ERROR, {"error": err}, logs.lines)
        return None

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
        if all(e.is_set() for e in self.ends.values()):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.ends.values())), timeout)

    async def run(self, payload: dict, timeout: float, logs: LogBuffer, limit_ms: int) -> Outcome:
        """timeout: seconds left for this run (init took some); limit_ms: the action's limit."""
        self.buffer = logs
        for e in self.ends.values():
            e.clear()
        try:
            self.proc.stdin.write(json.dumps(payload).encode() + b"\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.results.readline(), timeout)
        except TimeoutError:
            await self.kill()
            return Outcome(DEVELOPER_ERROR, {"error": timed_out(limit_ms)}, logs.lines, timed_out=True)
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        except (ValueError, asyncio.LimitOverrunError):
            await self.kill()
            return Outcome(APPLICATION_ERROR, {"error": "The action produced a response that exceeded the allowed "
                                                        f"length: more than {PIPE_LIMIT} > {MAX_RESULT_BYTES} bytes."},
                           logs.lines)
        if not line:
            await self._await_ends(0.5)
            rc = await self.kill()
            return Outcome(DEVELOPER_ERROR, {"error": OOM if rc == -signal.SIGKILL else ABNORMAL_RUN}, logs.lines)
        await self._await_ends(2.0)
        outcome = interpret(line, logs.lines)
        if outcome.result == {"error": OOM}:
            await self.kill()  # OpenWhisk destroys the container; a MemoryError leaves a doubtful process
        self.idle_since = time.monotonic()
        return outcome

    async def kill(self) -> int | None:
        self.dead = True
        if self.proc and self.proc.returncode is None:
            _kill_group(self.proc.pid)
        rc = None
        if self.proc:
            with contextlib.suppress(TimeoutError):
                rc = await asyncio.wait_for(self.proc.wait(), 5)
        for t in self.readers:
            t.cancel()
        return rc


def interpret(line: bytes, logs: list[str]) -> Outcome:
    """The run response -> activation status, as OpenWhisk's invoker decides it."""
    if len(line) > MAX_RESULT_BYTES:
        trunk = line[:MAX_RESULT_BYTES].decode("utf-8", "replace")
        return Outcome(APPLICATION_ERROR, {"error": "The action produced a response that exceeded the allowed length: "
                                                    f"{len(line)} > {MAX_RESULT_BYTES} bytes. "
                                                    f"The truncated response was: {trunk}"}, logs)
    try:
        res = json.loads(line)
    except json.JSONDecodeError:
        return Outcome(DEVELOPER_ERROR, {"error": "The action did not produce a valid JSON response: "
                                                  f"{line[:200].decode('utf-8', 'replace')}"}, logs)
    if isinstance(res, dict) and res.get("__launcher_oom__"):
        return Outcome(DEVELOPER_ERROR, {"error": OOM}, logs)
    if isinstance(res, dict) and "__launcher_invalid__" in res:
        return Outcome(DEVELOPER_ERROR, {"error": "The action did not produce a valid JSON response: "
                                                  f"{res['__launcher_invalid__']}"}, logs)
    if isinstance(res, list):
        return Outcome(SUCCESS, res, logs)
    if not isinstance(res, dict):
        return Outcome(DEVELOPER_ERROR, {"error": NOT_DICT}, logs)
    if "error" in res:
        return Outcome(APPLICATION_ERROR, {"error": res["error"]}, logs)
    return Outcome(SUCCESS, res, logs)


def env_value(v) -> str:
    """OpenWhisk's /init env: strings as they are, null as "", anything else as compact JSON."""
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    return json.dumps(v, separators=(",", ":"))


def pool_key(action: dict, digest: str, memory: int, init_env: dict) -> str:
    """The warm pool of one action version: its code, memory limit and `init: true` parameters
    (any JSON value, so they are keyed by their canonical JSON, not hashed as they are)."""
    init = json.dumps(init_env, sort_keys=True, separators=(",", ":"))
    return f"{action['namespace']}/{action['name']}:{digest}:{memory}:{init}"


class Executor:
    """Keeps warm processes per action version and runs activations on them."""

    def __init__(self, workdir: Path, api_host: str, python: str = sys.executable, keep_warm: int = 4,
                 idle_timeout: float = 600.0):
        self.workdir = Path(workdir)
        self.api_host = api_host
        self.python = python
        self.keep_warm = keep_warm
        self.idle_timeout = idle_timeout
        self.warm: dict[str, list[PythonProcess]] = {}
        self.ready: dict[str, Path] = {}
        self.unpacking: dict[str, asyncio.Lock] = {}
        # Actions find the all-in-one's venv first on PATH (`#!/usr/bin/env python3` in an exec).
        self.path = os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "/usr/bin:/bin")])

    def base_env(self, meta: dict, init_env: dict) -> dict:
        env = {"PATH": self.path, "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/tmp"),
               "PYTHONUNBUFFERED": "1",
               # one thread per BLAS pool: many small processes, and RLIMIT_AS counts thread stacks
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "__OW_API_HOST": self.api_host}
        for k, v in meta.items():
            env["__OW_" + k.upper()] = env_value(v)
        env.update({k: env_value(v) for k, v in init_env.items()})
        return env

    def warm_count(self) -> int:
        return sum(len(p) for p in self.warm.values())

    async def _code_dir(self, action: dict, digest: str) -> Path:
        name = f"{action['namespace'].replace('/', '_')}_{action['name']}_{digest}"
        d = self.ready.get(name)
        if d is None:
            async with self.unpacking.setdefault(name, asyncio.Lock()):  # concurrent cold starts unpack once
                d = self.ready.get(name)
                if d is None:
                    d = await asyncio.to_thread(materialize, action["exec"], self.workdir / name)
                    self.ready[name] = d
            self.unpacking.pop(name, None)
        return d

    async def execute(self, action: dict, args: dict, meta: dict, init_env: dict | None = None) -> Outcome:
        """Run one activation. meta: the run's non-`value` keys (namespace, action_name,
        activation_id, ..., api_key when provided); init_env: `init: true` parameters."""
        exec_ = action["exec"]
        limits = action.get("limits", {})
        timeout = limits.get("timeout", 60000) / 1000.0
        memory = int(limits.get("memory", 256))
        logs = LogBuffer(int(limits.get("logs", 10)) * MB)
        init_env = init_env or {}
        if exec_.get("kind") == "blackbox" and not exec_.get("code"):
            return Outcome(DEVELOPER_ERROR, {"error": init_failed(
                f"the all-in-one runs a blackbox action from its code (an executable named exec); "
                f"it cannot run the container image '{exec_.get('image')}'")}, [], 0)
        digest = code_digest(exec_)
        try:
            action_dir = await self._code_dir(action, digest)
        except (ValueError, OSError) as e:
            return Outcome(DEVELOPER_ERROR, {"error": init_failed(str(e))}, [], 0)
        if exec_.get("kind") == "blackbox" or ((action_dir / "exec").exists()
                                               and not (action_dir / "__main__.py").exists()):
            return await self.run_blackbox(action_dir, args, meta, init_env, timeout, memory, logs)
        payload = {"value": args, **meta}
        # Warm processes belong to one action version (as OpenWhisk's containers): never shared
        # between actions or namespaces, even with the same code.
        key = pool_key(action, digest, memory, init_env)
        pool = self.warm.setdefault(key, [])
        init_ms = None
        proc = None
        while pool:
            cand = pool.pop()
            if not cand.dead and cand.proc.returncode is None:
                proc = cand
                break
            await cand.kill()
        if proc is None:
            t0 = time.monotonic()
            proc = PythonProcess(action_dir, exec_.get("main") or "main", self.base_env(meta, init_env),
                                 memory, self.python)
            failed = await proc.start(timeout, logs, int(timeout * 1000))
            init_ms = int((time.monotonic() - t0) * 1000)
            if failed is not None:
                failed.init_ms = init_ms
                return failed
            timeout = max(timeout - init_ms / 1000.0, 0.1)
        outcome = await proc.run(payload, timeout, logs, int(limits.get("timeout", 60000)))
        outcome.init_ms = init_ms
        if not proc.dead and len(pool) < self.keep_warm:
            pool.append(proc)
        elif not proc.dead:
            await proc.kill()
        return outcome

    async def run_blackbox(self, action_dir: Path, args: dict, meta: dict, init_env: dict, timeout: float,
                           memory: int, logs: LogBuffer) -> Outcome:
        """dockerskeleton's protocol: JSON args as argv[1] and on stdin; the last stdout line is the result."""
        payload = json.dumps(args)
        argv = [str(action_dir / "exec")] + ([payload] if len(payload) <= MAX_ARG_STRLEN else [])
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self.base_env(meta, init_env), cwd=str(action_dir),
                start_new_session=True, preexec_fn=_child_setup(memory), limit=PIPE_LIMIT)
        except OSError as e:
            return Outcome(DEVELOPER_ERROR, {"error": "The action failed to generate or locate a binary. "
                                                      f"See logs for details. ({e.strerror})"}, logs.lines)
        last: list[str] = []  # the most recent stdout line: logged once the next one arrives
        err_tail: collections.deque[str] = collections.deque(maxlen=20)

        async def pump(stream: asyncio.StreamReader, name: str):
            while True:
                try:
                    raw = await stream.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    raw = await stream.read(MB)
                if not raw:
                    return
                text = raw.decode("utf-8", "replace").rstrip("\n")
                if name == "stderr":
                    logs.add("stderr", text)
                    err_tail.append(text)
                    continue
                if last:
                    logs.add("stdout", last.pop())
                last.append(text)

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
            _kill_group(proc.pid)
            await proc.wait()
            for t in readers:
                t.cancel()
            if last:
                logs.add("stdout", last.pop())
            return Outcome(DEVELOPER_ERROR, {"error": timed_out(int(timeout * 1000))}, logs.lines, timed_out=True)
        finally:
            _kill_group(proc.pid)  # children the exec left behind
        line = last.pop() if last else ""
        # Under RLIMIT_AS an allocation fails instead of the kernel's OOM kill: a process that
        # died saying so ran out of memory, as a container would have.
        if proc.returncode == -signal.SIGKILL or (proc.returncode and any(
                m in t for t in err_tail for m in OOM_MARKERS)):
            logs.add("stdout", line)
            return Outcome(DEVELOPER_ERROR, {"error": OOM}, logs.lines)
        try:
            res = json.loads(line)
        except json.JSONDecodeError:
            res = None
        if not isinstance(res, dict | list):
            logs.add("stdout", line)
            return Outcome(DEVELOPER_ERROR, {"error": NOT_DICT}, logs.lines)
        return interpret(line.encode(), logs.lines)

    async def reap(self) -> int:
        """Stop warm processes idle for longer than idle_timeout; returns how many."""
        now = time.monotonic()
        n = 0
        for pool in self.warm.values():
            for p in list(pool):
                if now - p.idle_since > self.idle_timeout:
                    pool.remove(p)
                    await p.kill()
                    n += 1
        return n

    async def close(self) -> None:
        for pool in self.warm.values():
            for p in pool:
                await p.kill()
        self.warm.clear()
