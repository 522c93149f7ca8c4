"""Shared fixtures: users, tokens, API clients. Fake upstream fixtures live in tests/fakes/."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient

pytest_plugins = ["tests.fakes.fixtures", "tests.browser_fixtures"]


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Tests that need a real PostgreSQL are skipped, with the reason, when the suite runs on SQLite."""
    if settings.IS_POSTGRES:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL=postgres://…); running on SQLite")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Each test starts with empty caches (shared cache and the per-process registries)."""
    from apps.billing.selectors import plans_forget
    from apps.providers.health import circuits_forget
    from apps.providers.selectors import chains_forget

    cache.clear()
    plans_forget()
    chains_forget()
    circuits_forget()


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    from apps.accounts.services import user_create

    counter = {"n": 0}

    def _make(username: str | None = None, password: str = "secret-pass-123", **kwargs: Any) -> Any:
        counter["n"] += 1
        return user_create(username=username or f"user{counter['n']}", password=password, **kwargs)

    return _make


@pytest.fixture
def user(make_user: Callable[..., Any]) -> Any:
    return make_user("alice")


@pytest.fixture
def other_user(make_user: Callable[..., Any]) -> Any:
    return make_user("bob")


@pytest.fixture
def make_client(db: Any) -> Callable[..., APIClient]:
    from apps.accounts.services import token_create

    def _make(user: Any | None = None, *, language: str | None = None) -> APIClient:
        client = APIClient()
        headers: dict[str, str] = {}
        if user is not None:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {token_create(user=user).token}"
        if language:
            headers["HTTP_ACCEPT_LANGUAGE"] = language
        client.credentials(**headers)
        return client

    return _make


@pytest.fixture
def client_for(make_client: Callable[..., APIClient]) -> Callable[..., APIClient]:
    return make_client


@pytest.fixture
def api(make_client: Callable[..., APIClient], user: Any) -> APIClient:
    """An authenticated client for `user` (alice)."""
    return make_client(user)


@pytest.fixture
def anon(make_client: Callable[..., APIClient]) -> APIClient:
    return make_client()


@pytest.fixture(autouse=True, scope="session")
def _test_secrets() -> None:
    """Tests run with DEBUG off on the development keys: the production secrets rule is lifted for
    them (tests/security/test_secrets.py checks the rule itself)."""
    settings.ALLOW_INSECURE_SECRETS = True
    settings.BILLING_SWEEP_IN_PROCESS = False  # tests sweep explicitly (tests/security/test_deadlines.py)


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hasher() -> None:
    """Password hashing strength is not under test; PBKDF2's 1M iterations would dominate run time."""
    from django.contrib.auth.hashers import get_hashers, get_hashers_by_algorithm

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    get_hashers.cache_clear()
    get_hashers_by_algorithm.cache_clear()


@pytest.fixture(scope="session")
def live_server_url() -> Any:
    """uvicorn serving the project (real ASGI, real sockets); combine with `transactional_db`."""
    from tests.live import LiveServer

    server = LiveServer().start()
    try:
        yield server.url
    finally:
        server.stop()
