"""The managed llama.cpp server process (started by :class:`~apps.providers.localmodel.manager.LocalServer`).

    python -m apps.providers.localmodel.server --model FILE.gguf --state KEY.json --users KEY.users …

It picks a free loopback port, writes ``{"pid", "port", "status": "loading"}`` to the state file,
loads the model in xllamacpp's embedded llama.cpp HTTP server (the model's own chat template, from the
GGUF), marks the state ``ready`` and serves until SIGTERM/SIGINT — or until no app process holds a
shared lock on the users file any more (it polls for an exclusive one). A failure to start is written
to the state file (``"status": "failed"``) before it exits. The manager passes the lock file it locked
(``--lock-fd``): holding it open is what tells other processes that this server is alive.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

POLL_USERS = 1.0
PORT_ATTEMPTS = 3


def write_state(path: str, **state: Any) -> None:
    """Replace the state file atomically (readers never see half of it)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), **state}, f)
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def watch_users(path: str, stop: threading.Event) -> None:
    """Signal this process once nobody holds a shared lock on ``path`` (the last app process ended)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    while not stop.wait(POLL_USERS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # some app process still uses the server
        # kept until exit: an app process arriving now waits for the next server
        os.kill(os.getpid(), signal.SIGTERM)
        return


def start_llama(args: argparse.Namespace, port: int) -> Any:
    """xllamacpp's llama.cpp server on ``port``; returns once the model is loaded (it answers 503 on
    /health meanwhile). The server runs on native threads until the returned object is deleted."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_parallel = args.parallel
    params.n_ctx = args.context * args.parallel  # each slot gets the whole context
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.model_alias = {args.alias}
    params.offline = True
    params.use_jinja = True  # the chat template from the GGUF's metadata
    params.endpoint_slots = True  # /slots: operators (and tests) see which requests run
    return xllamacpp.Server(params)


Starter = Callable[[argparse.Namespace, int], Any]


def serve(args: argparse.Namespace, start: Starter) -> int:
    server = None
    error = ""
    port = 0
    for _ in range(PORT_ATTEMPTS):  # another process may take the port between the probe and the bind
        port = free_port()
        write_state(args.state, port=port, status="loading", model=args.model)
        try:
            server = start(args, port)
            break
        except Exception as exc:  # xllamacpp raises RuntimeError on a bad model or a taken port
            error = f"{type(exc).__name__}: {exc}"
            if port_free(port):
                break  # not the port: another attempt would fail the same way
    if server is None:
        write_state(args.state, status="failed", error=error[:500] or "the server did not start")
        return 1
    write_state(args.state, port=port, status="ready", model=args.model)
    print(f"ready on 127.0.0.1:{port}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    del server
    time.sleep(0.1)
    return 0


def main(argv: list[str] | None = None, *, start: Starter = start_llama) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", default="local")
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--state", required=True)
    parser.add_argument("--users", required=True)
    parser.add_argument("--lock-fd", type=int, default=-1)
    args = parser.parse_args(argv)
    # Block the stop signals in every thread (the llama.cpp threads included): `sigwait` takes them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    stop = threading.Event()
    threading.Thread(target=watch_users, args=(args.users, stop), daemon=True, name="users").start()
    try:
        return serve(args, start)
    except Exception as exc:  # e.g. xllamacpp missing: tell the app processes, then exit
        write_state(args.state, status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
