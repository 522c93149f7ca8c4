"""The page served from one origin calling the API on another: allowed by CORS_ALLOWED_ORIGINS (the
stream is read cross-origin, with the X-Generation-ID header), and refused when that origin is not listed
(the browser's fetch fails; the page says why it may have failed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apps.generation.models import Generation
from tests.fakes.upstream import Reply
from tests.live import LiveServer
from tests.playground.conftest import sign_in_with_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def page_origin() -> Iterator[str]:
    """A second server (another port: another origin) that serves the page only."""
    server = LiveServer().start()
    try:
        yield server.url
    finally:
        server.stop()


def test_a_page_on_an_allowed_origin_streams_from_the_api(
    playground, page_origin, live_server_url, fake_upstream, make_model, writing_prompt, token, settings
):
    settings.CORS_ALLOWED_ORIGINS = [page_origin]
    make_model()
    page = playground(base=page_origin, api=live_server_url)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    sign_in_with_token(page, token)
    fake_upstream.script(Reply(chunks=["跨", "域", "可读"], chunk_delay=0.05))
    page.get_by_test_id("generate").click()
    page.get_by_test_id("consumption").wait_for()

    assert page.get_by_test_id("output").inner_text() == "跨域可读"
    assert page.get_by_test_id("consumption").get_attribute("data-total-cost") == "4"
    assert page.url.startswith(page_origin) and page_origin != live_server_url
    api_calls = [url for url in requests if "/api/v1/" in url]
    assert api_calls and all(url.startswith(live_server_url) for url in api_calls)
    assert Generation.objects.get().status == "succeeded"
    assert page.get_by_test_id("error").is_hidden()


def test_a_page_on_an_origin_not_allowed_is_refused_by_the_browser(
    playground, page_origin, live_server_url, token, settings
):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    page = playground(base=page_origin, api=live_server_url)

    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("token-input").press("Enter")

    error = page.get_by_test_id("error")
    error.wait_for()
    assert "Cannot reach the API" in error.inner_text() and "CORS_ALLOWED_ORIGINS" in error.inner_text()
    assert page.get_by_test_id("balance").is_hidden()  # still signed out
    assert page.get_by_test_id("login-submit").is_visible()
