"""The dashboard in a real browser: an operator signs in to the admin, opens the usage dashboard from the
index, sees the charts, and the page is saved as docs/screenshots/dashboard.png (docs/operations.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from apps.billing.models import Charge
from apps.billing.selectors import billing_day
from tests.dashboard.seed import seed, seed_calls, staff

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_opens_the_dashboard(page: Any, screenshot: Any, live_server_url: str) -> None:
    # given: two weeks of usage up to today, upstream calls today, and an operator
    today = billing_day()
    seed(days=14, last_day=today)
    seed_calls(day=today)
    staff("operator", "operator-pass-123")
    # when: the operator signs in and follows the index's link
    page.goto(f"{live_server_url}/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "operator-pass-123")
    page.click("input[type=submit]")
    page.click("#dashboard-link a.section")
    page.wait_for_selector("#totals")
    # then: the default range (the last 30 days) with its charts and tables
    assert page.input_value("#id_to") == today.isoformat()
    assert page.input_value("#id_from") == (today - timedelta(days=29)).isoformat()
    assert page.locator('svg[role="img"]').count() == 3
    assert page.locator("#users tbody tr").count() == 3
    assert page.locator("#connections tbody tr").count() == 2
    assert page.text_content('[data-field="generations"]') == f"{Charge.objects.count():,}"
    screenshot(page, "dashboard")
    # and a bad range is a message, not an error page
    page.fill("#id_from", "2026-12-31")
    page.fill("#id_to", "2026-01-01")
    page.click(".dash-form input[type=submit]")
    assert "must not be after" in (page.text_content("#range-errors") or "")
