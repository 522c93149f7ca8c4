"""Pytest fixtures for the fake upstream. Register them as a plugin in the root conftest::

    pytest_plugins = ["tests.fakes.fixtures"]

(the provider test modules also declare it, so they run on their own too).

* ``fake_upstream_server`` (session): one server on a free loopback port for the whole run.
* ``fake_upstream`` (function): the same server, reset before and after each test (scripts,
  recorded requests and disconnects are per test; stale connections of earlier tests are ignored).
* ``provider_clients`` (function, async): closes the pooled aiohttp sessions of the test's loop at the
  end of the test (use it in tests that call adapters).
* ``local_stand_in`` (function): ``LLM_PROVIDER=local`` with a 4,096-token model file (metadata only)
  served by the stand-in of :mod:`tests.fakes.local_server`; yields the model path (steer the
  stand-in with ``set_mode(path, …)``); the servers this process started are gone at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_upstream(fake_upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    fake_upstream_server.reset()
    try:
        yield fake_upstream_server
    finally:
        fake_upstream_server.reset()


@pytest.fixture
async def provider_clients() -> AsyncIterator[None]:
    from apps.providers.adapters.client import aclose_clients

    try:
        yield
    finally:
        await aclose_clients()


@pytest.fixture
def local_stand_in(settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from apps.providers.localmodel import manager
    from tests.fakes.local_server import write_tiny_gguf

    settings.LLM_BASE_URL = ""
    settings.LLM_PROVIDER = "local"
    settings.DEFAULT_MODEL_ID = "local-smollm2"
    settings.LOCAL_MODEL_PATH = write_tiny_gguf(tmp_path / "tiny.gguf", context=4096)
    settings.LOCAL_MODEL_STATE_DIR = str(tmp_path / "state")
    monkeypatch.setattr(manager, "server_module", "tests.fakes.local_server")
    monkeypatch.setattr("apps.providers.local.llama_cpp_installed", lambda: True)
    try:
        yield settings.LOCAL_MODEL_PATH
    finally:
        assert manager.local_servers_detach(wait=10), "a stand-in server outlived the test"
