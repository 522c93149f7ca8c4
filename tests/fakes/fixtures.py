"""Pytest fixtures for the fake upstream. Register them as a plugin in the root conftest::

    pytest_plugins = ["tests.fakes.fixtures"]

(the provider test modules also declare it, so they run on their own too).

* ``fake_upstream_server`` (session): one server on a free loopback port for the whole run.
* ``fake_upstream`` (function): the same server, reset before and after each test (scripts,
  recorded requests and disconnects are per test; stale connections of earlier tests are ignored).
* ``provider_clients`` (function, async): closes the pooled aiohttp sessions of the test's loop at the
  end of the test (use it in tests that call adapters).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

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
