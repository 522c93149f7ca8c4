"""CORS for browser clients on other origins (the listed ones only), on the API and the OpenAI-compatible
API, through the real ASGI stack (the API handlers' own middleware)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED = "https://app.example.com"


@pytest.fixture(autouse=True)
def _allowed_origin(settings):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/generation/writing/stream", "/api/v1/prompts"])
def test_a_preflight_from_an_allowed_origin_may_send_a_token_and_json(live_server_url, path):
    response = httpx.options(
        live_server_url + path,
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-api-key",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-api-key"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]


def test_answers_to_an_allowed_origin_expose_the_headers_a_frontend_reads(live_server_url, token):
    response = httpx.get(
        f"{live_server_url}/v1/models", headers={"Origin": ALLOWED, "Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert exposed == {"x-request-id", "retry-after", "x-consumption-total", "x-balance-remaining", "x-generation-id"}


def test_other_origins_get_no_cors_headers(live_server_url, token):
    evil = "https://evil.example.com"
    preflight = httpx.options(
        f"{live_server_url}/v1/chat/completions",
        headers={"Origin": evil, "Access-Control-Request-Method": "POST"},
    )
    answer = httpx.get(f"{live_server_url}/v1/models", headers={"Origin": evil, "Authorization": f"Bearer {token}"})
    for response in (preflight, answer):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


@pytest.fixture
def token(user):
    from apps.accounts.services import token_create

    return token_create(user=user).token


def test_a_413_before_django_runs_is_readable_by_an_allowed_origin(live_server_url, token, settings):
    settings.API_BODY_MAX_BYTES = 1000
    response = httpx.post(
        f"{live_server_url}/v1/chat/completions",
        content=b"{" + b" " * 5000 + b"}",
        headers={
            "Origin": ALLOWED,
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Request-ID": "abc-123",
        },
    )
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["error"]["code"] == "request_too_large"
