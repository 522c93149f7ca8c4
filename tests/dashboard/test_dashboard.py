"""The usage dashboard: its figures equal the ledger's and `/billing/usage`'s for a seeded data set, its
CSV exports, the date range rules (a clear 400, never a 500), and who may see it."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Sum
from django.test import Client

from apps.accounts.services import token_create
from apps.billing.models import Charge, LedgerEntry, Wallet
from apps.billing.selectors import USAGE_FIELDS
from tests.dashboard.seed import GRANT, LAST_DAY, NOON, at, seed, seed_calls, staff

pytestmark = pytest.mark.django_db

FIRST_DAY = LAST_DAY - timedelta(days=2)
RANGE = {"from": FIRST_DAY.isoformat(), "to": LAST_DAY.isoformat()}


@pytest.fixture
def users() -> dict[str, Any]:
    return seed(days=3)


@pytest.fixture
def operator_client() -> Client:
    client = Client()
    client.force_login(staff())
    return client


def dashboard_of(client: Client, **params: str) -> Any:
    with at(NOON):
        response = client.get("/admin/usage/", params)
    assert response.status_code == 200, response.content[:2000]
    return response


def api_usage(user: Any) -> dict[str, Any]:
    """What the user's own `/api/v1/billing/usage` says for the range."""
    client = Client(headers={"Authorization": f"Bearer {token_create(user=user).token}", "Accept-Language": "en"})
    with at(NOON):
        response = client.get("/api/v1/billing/usage", RANGE)
    assert response.status_code == 200
    return response.json()


def test_the_figures_equal_the_ledger_and_each_users_usage(users: dict[str, Any], operator_client: Client) -> None:
    # when
    response = dashboard_of(operator_client, **RANGE)
    board = response.context["dashboard"]
    # then: the totals are what every user's /billing/usage adds up to, field by field and day by day
    usage = {name: api_usage(user) for name, user in users.items()}
    for field in USAGE_FIELDS:
        assert board.totals[field] == sum(u["totals"][field] for u in usage.values()), field
        for i, day in enumerate(board.days):
            assert day[field] == sum(u["days"][i][field] for u in usage.values()), (field, day["date"])
    assert [d["date"] for d in board.days] == ["2026-03-08", "2026-03-09", "2026-03-10"]
    # the paid part is exactly what the ledger's charge entries took, and what left the wallets
    ledger_charges = LedgerEntry.objects.filter(kind="charge").aggregate(total=Sum("amount"))["total"]
    assert board.totals["usedPaid"] == -ledger_charges > 0
    spent = sum(GRANT - w.paid_balance for w in Wallet.objects.all())
    assert board.totals["usedPaid"] == spent
    assert board.totals["totalCost"] == Charge.objects.aggregate(total=Sum("total_cost"))["total"]
    assert board.totals["generations"] == 11  # 12 calls less carol's empty day; released holds are no charge
    # per user: each row is that user's own report; the largest spender first
    rows = {row.label: row.usage for row in board.users}
    assert rows == {name: usage[name]["totals"] for name in users}
    assert [row.label for row in board.users] == sorted(rows, key=lambda n: -rows[n]["totalCost"])
    for row in board.users:
        paid = -(LedgerEntry.objects.filter(kind="charge", user_id=int(row.key)).aggregate(t=Sum("amount"))["t"] or 0)
        assert row.usage["usedPaid"] == paid
    # per model: the groups add up to the totals
    assert {row.key for row in board.models} == {"writer-pro", "writer-lite"}
    for field in USAGE_FIELDS:
        assert sum(row.usage[field] for row in board.models) == board.totals[field]
    pro = Charge.objects.filter(model_id="writer-pro").aggregate(t=Sum("total_cost"))["t"]
    assert next(r for r in board.models if r.key == "writer-pro").usage["totalCost"] == pro
    # and the page shows them
    html = response.content.decode()
    assert f'data-field="totalCost">{board.totals["totalCost"]:,}<' in html
    assert f'data-field="usedPaid">{board.totals["usedPaid"]:,}<' in html
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" role="img"') == 3  # the three charts


def test_a_range_is_exactly_its_days(users: dict[str, Any], operator_client: Client) -> None:
    board = dashboard_of(operator_client, **{"from": LAST_DAY.isoformat(), "to": LAST_DAY.isoformat()}).context[
        "dashboard"
    ]
    last = Charge.objects.filter(day=LAST_DAY)
    assert board.totals["totalCost"] == last.aggregate(t=Sum("total_cost"))["t"]
    assert board.totals["generations"] == last.count() == 3  # carol spent nothing that day


def test_the_default_range_is_the_last_30_days(users: dict[str, Any], operator_client: Client) -> None:
    board = dashboard_of(operator_client).context["dashboard"]
    assert (board.start, board.end) == (LAST_DAY - timedelta(days=29), LAST_DAY)
    assert board.totals["generations"] == 11


def test_error_rate_per_connection(operator_client: Client) -> None:
    seed_calls()
    board = dashboard_of(operator_client, **RANGE).context["dashboard"]
    found = {c.connection: (c.calls, c.outcomes.get("ok", 0), c.failures, c.error_rate) for c in board.connections}
    # openai-main: 7 ok, 2 server errors (attempts), 1 broken stream, 1 timeout; deepseek-backup: 4 ok, 1 cancelled
    assert found["openai-main"] == (11, 7, 4, pytest.approx(4 / 11))
    assert found["deepseek-backup"] == (5, 4, 0, 0.0)
    assert [c.connection for c in board.connections] == ["openai-main", "deepseek-backup"]


def read_csv(response: Any) -> list[list[str]]:
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="usage-')
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_csv_exports(users: dict[str, Any], operator_client: Client) -> None:
    seed_calls()
    board = dashboard_of(operator_client, **RANGE).context["dashboard"]
    days = read_csv(dashboard_of(operator_client, **RANGE, export="days"))
    assert days[0] == ["date", *USAGE_FIELDS]
    assert days[1:] == [[d["date"], *(str(d[f]) for f in USAGE_FIELDS)] for d in board.days]
    models = read_csv(dashboard_of(operator_client, **RANGE, export="models"))
    assert models[1:] == [[r.key, *(str(r.usage[f]) for f in USAGE_FIELDS)] for r in board.models]
    exported = read_csv(dashboard_of(operator_client, **RANGE, export="users"))
    assert exported[0] == ["userId", "username", *USAGE_FIELDS]
    by_name = {row[1]: row for row in exported[1:]}
    # every user with a charge, and a name a spreadsheet would run as a formula is quoted
    assert set(by_name) == {"alice", "bob", "'+carol"}
    assert by_name["alice"][2:] == [str(api_usage(users["alice"])["totals"][f]) for f in USAGE_FIELDS]
    connections = read_csv(dashboard_of(operator_client, **RANGE, export="connections"))
    assert connections[0] == ["connection", "calls", "ok", "cancelled", "failures", "errorRate", "errors"]
    assert connections[1] == [
        "openai-main",
        "11",
        "7",
        "0",
        "4",
        "0.3636",
        "upstream_connect_error=1 upstream_server_error=2 upstream_timeout=1",
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2026-13-01"}, "from: Date has wrong format"),
        ({"to": "yesterday"}, "to: Date has wrong format"),
        ({"from": "2026-03-10", "to": "2026-03-01"}, "from: “from” must not be after “to”."),
        ({"from": "2024-01-01", "to": "2026-03-01"}, "to: The range can span at most 366 days."),
        ({"from": "0001-01-01"}, "from: Use a date from 2000-01-01 to 2999-12-31."),
        ({"export": "pdf"}, "Unknown export pdf: use one of days, models, users, connections."),
    ],
)
def test_a_bad_range_is_a_clear_400(operator_client: Client, params: dict[str, str], message: str) -> None:
    with at(NOON):
        response = operator_client.get("/admin/usage/", params, headers={"Accept-Language": "en"})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="range-errors"' in html and message in html
    assert 'role="img"' not in html  # no chart, no figures


def test_an_empty_field_is_the_default(operator_client: Client) -> None:
    board = dashboard_of(operator_client, **{"from": "", "to": ""}).context["dashboard"]
    assert board.end == LAST_DAY


def test_only_staff_with_the_charge_permission(users: dict[str, Any]) -> None:
    anonymous = Client()
    response = anonymous.get("/admin/usage/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    plain = Client()
    plain.force_login(users["alice"])
    assert plain.get("/admin/usage/").status_code == 302  # not staff: the admin's login page
    staff_only = Client()
    member = staff("helper")
    member.user_permissions.clear()
    staff_only.force_login(member)
    assert staff_only.get("/admin/usage/").status_code == 403
    assert "/admin/usage/" not in staff_only.get("/admin/").content.decode()


def test_the_admin_index_links_it(operator_client: Client) -> None:
    assert 'href="/admin/usage/"' in operator_client.get("/admin/").content.decode()


def test_the_page_speaks_chinese_by_default(operator_client: Client) -> None:
    with at(NOON):
        page = operator_client.get("/admin/usage/").content.decode()
        refused = operator_client.get("/admin/usage/", {"from": "2026-03-10", "to": "2026-03-01"})
    assert "用量看板" in page and "各连接的上游调用" in page
    assert refused.status_code == 400 and "日期范围无法使用" in refused.content.decode()
