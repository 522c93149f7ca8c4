"""The generation metrics after known traffic through the live server and the fake upstream, exact; and
the dashboard's per-connection counts equal to them (one definition: apps/generation/calls.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from apps.billing.models import Charge, Wallet
from apps.billing.selectors import billing_day, day_bounds
from apps.billing.services import wallet_grant
from apps.generation.models import Generation
from apps.generation.selectors import upstream_calls_by_connection
from tests.fakes.upstream import Reply
from tests.generation.conftest import sse_events
from tests.metrics.scrape import Samples, delta, parse, value

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"parameters": {"主角名字": "李明", "故事背景": "都市"}, "userInput": "开头", "maxTokens": 100}


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return parse(response.text)


def test_a_day_of_known_traffic(
    http: httpx.Client,
    live_server_url: str,
    fake_upstream: Any,
    make_model: Any,
    writing_prompt: Any,
    user: Any,
    settings: Any,
) -> None:
    # given: a model on connection A falling back to one on connection B; a small free quota and a balance
    settings.BILLING_DAILY_FREE_QUOTA = 5
    wallet_grant(user=user, amount=100_000)
    backup = make_model("m-backup", connection_name="conn-b")
    make_model("m-main", connection_name="conn-a", fallbacks=(backup,))
    body = {**BODY, "promptId": writing_prompt.pk, "modelId": "m-main"}
    before = scrape(live_server_url)

    # when: (1) A fails twice (retry), B answers, streamed
    fake_upstream.script(Reply(status=500), Reply(status=503), Reply(chunks=["备用", "答案"]))
    first = http.post("/api/v1/generation/writing/stream", json=body)
    assert first.status_code == 200 and sse_events(first.text)[-1] == "[DONE]"
    # (2) A answers at once, not streamed
    fake_upstream.script(Reply(chunks=["一二三"]))
    assert http.post("/api/v1/generation/writing", json=body).status_code == 200
    # (3) A breaks off after its first text (no fallback after the first text)
    fake_upstream.script(Reply(chunks=["甲", "乙", "丙"], reset_after=1))
    broken = http.post("/api/v1/generation/writing/stream", json=body)
    assert '"error"' in broken.text
    # (4) a user who cannot pay: 402
    Wallet.objects.filter(pk=user.pk).update(paid_balance=0)
    settings.BILLING_DAILY_FREE_QUOTA = 0
    assert http.post("/api/v1/generation/writing", json=body).status_code == 402
    after = scrape(live_server_url)

    # then: the upstream calls, by connection, model and outcome
    broken_code = Generation.objects.get(status="failed").error_code
    assert broken_code.startswith("upstream_")
    calls = "upstream_calls_total"
    assert delta(before, after, calls, connection="conn-a", model="m-main", outcome="upstream_server_error") == 2
    assert delta(before, after, calls, connection="conn-b", model="m-backup", outcome="ok") == 1
    assert delta(before, after, calls, connection="conn-a", model="m-main", outcome="ok") == 1
    assert delta(before, after, calls, connection="conn-a", model="m-main", outcome=broken_code) == 1
    # time to first token: the two streamed calls that produced text
    ttft = "upstream_time_to_first_token_seconds_count"
    assert delta(before, after, ttft, connection="conn-b", model="m-backup") == 1
    assert delta(before, after, ttft, connection="conn-a", model="m-main") == 1
    # output characters delivered (the broken call's one character included) and characters charged
    assert delta(before, after, "generation_output_characters_total", model="m-backup") == 4
    assert delta(before, after, "generation_output_characters_total", model="m-main") == 3 + 1
    charges = {c.model_id: c for c in Charge.objects.all()}
    assert set(charges) == {"m-backup", "m-main"}  # the broken call is not charged
    for model, charge in charges.items():
        assert charge.used_daily_free + charge.used_paid > 0
        assert (
            delta(before, after, "billing_charged_characters_total", model=model, funds="free")
            == charge.used_daily_free
        )
        assert delta(before, after, "billing_charged_characters_total", model=model, funds="paid") == charge.used_paid
    assert (charges["m-main"].used_daily_free, charges["m-main"].used_paid) == (1, 2)  # quota out, balance pays
    # the 402, the requests, and nothing left open
    assert delta(before, after, "billing_insufficient_balance_total") == 1
    requests = "http_requests_total"
    assert delta(before, after, requests, route="/api/v1/generation/writing/stream", method="POST", status="200") == 2
    assert delta(before, after, requests, route="/api/v1/generation/writing", method="POST", status="200") == 1
    assert delta(before, after, requests, route="/api/v1/generation/writing", method="POST", status="402") == 1
    assert value(after, "sse_streams_open") == 0
    assert value(after, "billing_holds_open") == 0

    # and the dashboard counts the same calls per connection
    since, until = day_bounds(start=billing_day(), end=billing_day())
    dashboard = {c.connection: c.outcomes for c in upstream_calls_by_connection(since=since, until=until)}
    assert dashboard == {
        "conn-a": {"upstream_server_error": 2, "ok": 1, broken_code: 1},
        "conn-b": {"ok": 1},
    }
