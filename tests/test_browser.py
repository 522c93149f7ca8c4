"""The browser fixture itself: chromium starts, runs JavaScript and reaches the live server."""

from __future__ import annotations

from typing import Any

import pytest


def test_the_browser_runs_javascript(page: Any) -> None:
    page.set_content("<p id='x'></p><script>document.getElementById('x').textContent = 6 * 7</script>")
    assert page.text_content("#x") == "42"


@pytest.mark.django_db(transaction=True)
def test_the_browser_reaches_the_live_server(page: Any, live_server_url: str) -> None:
    response = page.goto(f"{live_server_url}/healthz")
    assert response is not None and response.status == 200
