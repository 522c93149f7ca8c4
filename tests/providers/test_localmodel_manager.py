"""The managed local server's process protocol (no Django, no llama.cpp): one server per model for
every process, 503-style "loading" until /health says ready, stop once the last user is gone, a failed
start reported and not retried at once. The server is the stand-in of tests/fakes/local_server.py,
which runs the real state/lock/watch code of apps.providers.localmodel.server around a tiny HTTP server.

Two `LocalServer` handles in one test behave like two processes: `flock` locks belong to open files.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps.providers.localmodel.manager import (
    PROJECT_ROOT,
    RETRY_AFTER,
    LocalModelFailed,
    LocalModelLoading,
    LocalModelSpec,
    LocalServer,
)
from tests.fakes.local_server import set_mode

FAKE = "tests.fakes.local_server"


@pytest.fixture
def spec(tmp_path: Path) -> LocalModelSpec:
    model = tmp_path / "model.gguf"
    model.write_text("not read by the stand-in")
    set_mode(str(model), "loading")
    return LocalModelSpec(
        model_path=str(model), alias="local", context=512, parallel=2, state_dir=str(tmp_path / "state")
    )


@pytest.fixture
def handles(spec: LocalModelSpec):
    made: list[LocalServer] = []

    def make() -> LocalServer:
        made.append(LocalServer(spec, module=FAKE))
        return made[-1]

    yield make
    for handle in made:
        handle.detach()
    for handle in made:
        assert handle.detach(wait=10), "the stand-in server outlived its users"


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def base_url(server: LocalServer) -> str:
    return asyncio.run(server.base_url())


def loaded(server: LocalServer) -> bool:
    try:
        base_url(server)
    except LocalModelLoading:
        return False
    return True


def test_loading_then_ready_and_one_server_for_every_process(spec, handles) -> None:
    first, second = handles(), handles()

    # when: the first use starts the server, which loads (its /health answers 503)
    with pytest.raises(LocalModelLoading) as loading:
        base_url(first)
    assert loading.value.retry_after == RETRY_AFTER
    wait_for(lambda: first.state().port is not None)
    with pytest.raises(LocalModelLoading, match="loading"):
        base_url(first)
    state = first.state()
    assert state.alive

    # then: the model is loaded → the URL; another process uses the same server
    set_mode(spec.model_path, "ready")
    wait_for(lambda: loaded(first))  # the stand-in notices the change at its own pace
    url = base_url(first)
    assert url == f"http://127.0.0.1:{state.port}/v1"
    assert second.start() is False
    assert base_url(second) == url
    assert second.state().pid == state.pid
    assert sorted(p.suffix for p in Path(spec.state_dir).iterdir()) == [".json", ".lock", ".log", ".users"]


def test_the_server_stops_when_its_last_user_goes(spec, handles) -> None:
    set_mode(spec.model_path, "ready")
    first, second = handles(), handles()
    first.wait_ready(10)
    second.wait_ready(10)
    pid = first.state().pid
    assert pid is not None

    assert first.detach(wait=1.5) is False  # the second still uses it
    assert alive_or_zombie(pid)
    assert second.detach(wait=10) is True
    wait_for(lambda: not alive_or_zombie(pid))  # (the first handle, its parent, reaps it later)
    assert first.state().alive is False


def test_a_killed_app_process_stops_the_server(spec, tmp_path) -> None:
    set_mode(spec.model_path, "ready")
    code = (
        "import sys, time\n"
        "from apps.providers.localmodel.manager import LocalModelSpec, LocalServer\n"
        f"s = LocalServer(LocalModelSpec(**{spec_kwargs(spec)!r}), module={FAKE!r})\n"
        "s.wait_ready(10)\n"
        "print(s.state().pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    app = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None
        server_pid = int(app.stdout.readline())
        assert alive_or_zombie(server_pid)
    finally:
        app.send_signal(signal.SIGKILL)  # no clean-up of any kind in the app process
        app.wait()
    wait_for(lambda: not alive_or_zombie(server_pid))


def spec_kwargs(spec: LocalModelSpec) -> dict[str, object]:
    return {
        name: getattr(spec, name) for name in ("model_path", "alias", "context", "parallel", "threads", "state_dir")
    }


def alive_or_zombie(pid: int) -> bool:
    """True while `pid` runs (a zombie — ended, its parent gone or not waiting — counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_failed_start_is_reported_and_not_retried_at_once(spec, handles) -> None:
    set_mode(spec.model_path, "fail")
    server = handles()
    with pytest.raises(LocalModelLoading):
        base_url(server)
    wait_for(lambda: server.state().status == "failed")
    with pytest.raises(LocalModelFailed, match=r"RuntimeError: Failed to init server \(stand-in told to fail\)"):
        base_url(server)
    pid = server.state().pid
    wait_for(lambda: not server.state().alive)  # the failed server has exited
    with pytest.raises(LocalModelFailed, match="stand-in told to fail"):
        server.start()  # within RESPAWN_AFTER: no new server
    assert server.state().pid == pid


def test_a_missing_model_file_fails_at_once(spec, handles) -> None:
    os.remove(spec.model_path)
    with pytest.raises(LocalModelFailed, match="does not exist"):
        base_url(handles())
    assert not Path(spec.state_dir, "x").parent.joinpath(f"{spec.key()}.json").exists()


def test_the_key_names_the_model_and_its_serving_settings(spec) -> None:
    key = spec.key()
    assert key.startswith("model-") and len(key) == len("model-") + 12
    assert LocalModelSpec(**{**spec_kwargs(spec), "state_dir": "/elsewhere"}).key() == key
    assert LocalModelSpec(**{**spec_kwargs(spec), "parallel": 4}).key() != key
    assert LocalModelSpec(**{**spec_kwargs(spec), "context": 1024}).key() != key
