"""Fixtures of the playground's browser tests: a signed-up user with funds, a model on the fake upstream,
a prompt with two `{{参数}}`, and the page open on the live server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from apps.accounts.services import token_create
from apps.billing.services import wallet_grant
from tests.generation.conftest import make_model, writing_prompt  # noqa: F401  (fixtures reused here)

PASSWORD = "playground-pass-123"


@pytest.fixture
def user(make_user: Callable[..., Any], request: pytest.FixtureRequest) -> Any:
    """alice, with 100,000 paid characters unless the test is marked `no_funds`."""
    alice = make_user("alice", password=PASSWORD)
    if "no_funds" not in request.keywords:
        wallet_grant(user=alice, amount=100_000)
    return alice


@pytest.fixture
def token(user: Any) -> str:
    return token_create(user=user).token


@pytest.fixture
def playground(page: Any, live_server_url: str) -> Callable[..., Any]:
    """`playground(api=None)` opens /playground/ (with `?api=` when given) and returns the page."""

    def _open(*, base: str | None = None, api: str | None = None) -> Any:
        url = f"{base or live_server_url}/playground/" + (f"?api={api}" if api else "")
        response = page.goto(url)
        assert response is not None and response.status == 200
        return page

    return _open


def sign_in_with_token(page: Any, token: str) -> None:
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("token-input").press("Enter")
    page.get_by_test_id("balance").wait_for()


@pytest.fixture
def desktop_and_phone(screenshot: Callable[..., Any]) -> Iterator[Callable[[Any, str], None]]:
    """`shots(page, "name")` saves name-desktop.png and name-phone.png (390 px wide), then restores."""

    def _shots(page: Any, name: str) -> None:
        size = page.viewport_size
        screenshot(page, f"{name}-desktop")
        page.set_viewport_size({"width": 390, "height": 844})
        screenshot(page, f"{name}-phone")
        page.set_viewport_size(size)

    yield _shots
