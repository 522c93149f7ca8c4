"""A real browser for page tests: Debian's chromium driven by Playwright.

Playwright's own browser download cannot reach its host here, so the system chromium is launched by
path (`CHROMIUM_PATH`, default /usr/bin/chromium; `.ci/run` installs it with apt). Without it the browser
tests are skipped with the reason — except under CI, where a missing browser is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def _browser_missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"needs chromium at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "needs the playwright package (pip install -e '.[dev]')"
    return None


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A headless chromium for one test.

    Playwright's sync API keeps an event loop marked as running on this thread while it is alive, which
    Django's async-safety check takes for an async context: the test body may use the ORM (the server
    under test runs in its own thread), so the check is lifted for this test only. Per test rather than
    per session so that no other test runs with the check lifted (a launch costs about 0.3 s).
    """
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run in CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies, no storage) and page, English, desktop size."""
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot(tmp_path: Path) -> Any:
    """`screenshot(page, "name")` takes a screenshot: into docs/screenshots/name.png with
    `UPDATE_SCREENSHOTS=1` (the docs show what the tests saw), else into the test's temporary directory —
    so an ordinary run does not rewrite tracked files."""
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path

    def _shot(page: Any, name: str, *, full_page: bool = True) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 0
        return path

    return _shot
