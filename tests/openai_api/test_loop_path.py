"""`/v1/chat/completions` on PostgreSQL without leaving the event loop once the caches are warm (as the
writing endpoints: tests/generation/test_loop_path.py), its `X-Balance-Remaining` read there too, and
the same answers, records and charges as on a thread."""

from __future__ import annotations

import orjson
import pytest

from apps.billing.models import Charge
from apps.billing.selectors import available_get
from apps.billing.services import wallet_grant
from apps.generation.models import Generation
from tests.fakes.upstream import Reply
from tests.generation.conftest import sse_events
from tests.generation.test_loop_path import thread_steps  # noqa: F401 (fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BODY = {"model": "gpt-4-turbo", "messages": [{"role": "user", "content": "请写开头"}], "max_tokens": 64}


def test_a_warm_chat_completion_stays_on_the_loop(http, fake_upstream, make_model, user, thread_steps):  # noqa: F811
    wallet_grant(user=user, amount=100_000)
    make_model()
    fake_upstream.script(Reply(chunks=["warm"]))
    assert http.post("/v1/chat/completions", json=BODY).status_code == 200
    thread_steps.clear()

    fake_upstream.script(Reply(chunks=["一二三"]))
    response = http.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 200, response.text
    assert thread_steps == []
    assert response.json()["choices"][0]["message"]["content"] == "一二三"
    record = Generation.objects.get(public_id=response.json()["id"])
    charge = Charge.objects.get(generation_id=record.public_id)
    assert response.headers["X-Consumption-Total"] == str(charge.total_cost)
    assert response.headers["X-Balance-Remaining"] == str(available_get(user_id=user.pk))


def test_a_warm_stream_tells_the_balance_after_its_hold(http, fake_upstream, make_model, user, thread_steps):  # noqa: F811
    wallet_grant(user=user, amount=100_000)
    make_model()
    fake_upstream.script(Reply(chunks=["warm"]))
    http.post("/v1/chat/completions", json=BODY)
    before = available_get(user_id=user.pk)
    thread_steps.clear()

    fake_upstream.script(Reply(chunks=["a", "b"]))
    response = http.post("/v1/chat/completions", json={**BODY, "stream": True})
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    assert thread_steps == []
    record = Generation.objects.get(public_id=orjson.loads(sse_events(response.text)[0])["id"])
    # sent before the first event: what was available less this call's hold
    assert int(response.headers["X-Balance-Remaining"]) == before - record.hold_amount
    assert Charge.objects.filter(generation_id=record.public_id).exists()
