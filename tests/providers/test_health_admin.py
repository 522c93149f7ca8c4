"""What an operator sees of connection health: the admin list (state, failures, since, a warning at the top),
the change page, the reset action (audited, logged), and `llm_check`."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.providers import services
from apps.providers.adapters import UpstreamServerError
from apps.providers.circuit import Permit
from apps.providers.health import breaker
from apps.providers.models import AIModel, Connection
from tests.fakes.fixtures import fake_upstream, fake_upstream_server  # noqa: F401
from tests.fakes.upstream import FakeUpstream, Reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456789")
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client


@pytest.fixture
def conns(fake_upstream: FakeUpstream) -> tuple[Connection, Connection]:  # noqa: F811
    up = services.connection_upsert(name="steady", kind="openai", base_url=fake_upstream.base_url).obj
    down = services.connection_upsert(name="flaky", kind="openai", base_url=fake_upstream.base_url).obj
    services.model_upsert(model_id="m-flaky", connection=down, upstream_model="u")
    return up, down


@pytest.fixture(autouse=True)
def frozen_clock() -> None:
    """The breaker's time stands still (the conftest puts the wall clock back)."""
    now = time.time()
    breaker().clock = lambda: now


def fail(connection: Connection, times: int) -> None:
    """`times` counted failures on the process's breaker (as the relay reports them)."""

    async def run() -> None:
        for _ in range(times):
            await breaker().failure(Permit(connection.pk, connection.name), UpstreamServerError("HTTP 500"))

    asyncio.run(run())


def cells(html: str, name: str) -> str:
    """The text of the list row of connection `name`."""
    row = re.search(rf"<tr>(?:(?!</tr>).)*?>{name}</a>.*?</tr>", html, re.S)
    assert row, name
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(0))).strip()


def test_the_list_shows_each_connections_health_and_warns(staff: Client, conns: Any) -> None:
    up, down = conns
    fail(up, 2)  # below the threshold (5): healthy, with its count
    fail(down, 5)
    response = staff.get(reverse("admin:providers_connection_changelist"))
    html = response.content.decode()
    assert response.status_code == 200
    assert cells(html, "steady").startswith("steady OpenAI-compatible Chat Completions healthy 2 —")
    assert re.match(
        r"flaky OpenAI-compatible Chat Completions open — next probe in 30 s 5 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
        cells(html, "flaky"),
    )
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Unhealthy connections (their calls go to the fallbacks): flaky: open — next probe in 30 s"
    ]
    change = staff.get(reverse("admin:providers_connection_change", args=[down.pk])).content.decode()
    assert "open — next probe in 30 s" in change and "Consecutive failures" in change


def test_half_open_is_shown(staff: Client, conns: Any) -> None:
    _up, down = conns
    fail(down, 5)
    later = breaker().clock() + 31
    breaker().clock = lambda: later
    html = staff.get(reverse("admin:providers_connection_changelist")).content.decode()
    assert "flaky OpenAI-compatible Chat Completions half-open (next call probes) 5" in cells(html, "flaky")


def test_reset_action_closes_the_circuit_audits_and_logs(
    staff: Client, conns: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _up, down = conns
    fail(down, 6)
    caplog.set_level(logging.WARNING, logger="apps.providers.circuit")
    caplog.clear()
    response = staff.post(
        reverse("admin:providers_connection_changelist"),
        {"action": "reset_circuit", "_selected_action": [down.pk]},
        follow=True,
    )
    assert "flaky: circuit reset (it had 6 consecutive failures)." in [
        str(m) for m in get_messages(response.wsgi_request)
    ]
    assert breaker().states([down.pk])[down.pk].opened_at == 0
    assert "flaky OpenAI-compatible Chat Completions healthy 0" in cells(response.content.decode(), "flaky")
    entry = AuditEntry.objects.get(action="connection.circuit_reset")
    assert (entry.actor, entry.via, entry.target_repr, entry.before, entry.after) == (
        "root",
        "admin",
        "flaky",
        {"failures": 6, "open": True},
        {"failures": 0, "open": False},
    )
    assert [r.getMessage() for r in caplog.records] == [f"circuit closed: connection flaky (#{down.pk}) reset by root"]


def llm_check(*args: str) -> list[str]:
    out = StringIO()
    call_command("llm_check", *args, stdout=out)
    return out.getvalue().splitlines()


def test_llm_check_reports_an_open_circuit_and_can_reset_it(
    conns: Any,
    fake_upstream: FakeUpstream,  # noqa: F811
    settings: Any,
) -> None:
    _up, down = conns
    fail(down, 5)
    fake_upstream.script(Reply(chunks=["Hi"]))
    lines = llm_check("m-flaky", "--reset-circuit")
    assert re.fullmatch(
        r"circuit: OPEN since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, 5 consecutive failures; calls go to the "
        r"fallbacks; next probe in 30 s"
        + re.escape(
            "" if settings.REDIS_URL else " [this process's view: without REDIS_URL each process keeps its own]"
        ),
        lines[1],
    ), lines[1]
    assert lines[2] == "reply: Hi"  # the test call bypasses the circuit
    assert lines[-2:] == ["circuit: reset (healthy)", "OK"]
    assert breaker().states([down.pk])[down.pk].failures == 0
    assert AuditEntry.objects.get().via == "command:llm_check"


def test_a_failed_check_does_not_reset(conns: Any, fake_upstream: FakeUpstream) -> None:  # noqa: F811
    _up, down = conns
    fail(down, 5)
    fake_upstream.script(Reply.error(500, "still down"))
    with pytest.raises(Exception, match="FAILED"):
        llm_check("m-flaky", "--reset-circuit")
    assert breaker().states([down.pk])[down.pk].opened_at > 0
    assert not AuditEntry.objects.filter(action="connection.circuit_reset").exists()
    assert AIModel.objects.count() == 1


@pytest.mark.parametrize(
    ("threshold", "cooldown", "ids"),
    [(5, 30.0, []), (0, 30.0, []), (-1, 30.0, ["providers.E001"]), (5, 0.0, ["providers.E002"])],
)
def test_circuit_settings_are_checked(settings: Any, threshold: int, cooldown: float, ids: list[str]) -> None:
    from apps.providers.checks import circuit_settings

    settings.CIRCUIT_FAILURE_THRESHOLD, settings.CIRCUIT_COOLDOWN_SECONDS = threshold, cooldown
    assert [e.id for e in circuit_settings(None)] == ids
