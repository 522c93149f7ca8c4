"""Generation on a `local` connection through the live server, with the stand-in server of
tests/fakes/local_server.py (the managed-process protocol, no llama.cpp): 503 with Retry-After while
the model loads — the error envelope on /api, OpenAI's error shape on /v1, nothing charged — then
answers. The real model: tests/generation/test_local_model_e2e.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from apps.billing.models import Charge, Hold
from apps.billing.services import wallet_grant
from apps.generation.models import Generation
from apps.providers.local import local_model_spec
from apps.providers.localmodel.manager import health, local_server
from apps.providers.quickstart import local_ensure
from tests.fakes.local_server import REPLY, set_mode

pytestmark = pytest.mark.django_db(transaction=True)

LOADING = "The model is loading; please retry in a few seconds."


@pytest.fixture
def local_model(local_stand_in, user):
    """The registered local model, its stand-in server started and loading (its /health says 503)."""
    wallet_grant(user=user, amount=100_000)
    local_ensure()
    set_mode(local_stand_in, "loading")
    server = local_server(local_model_spec())
    server.start()
    deadline = time.monotonic() + 15
    while asyncio.run(health(server.state().port or 0)) != 503:
        assert time.monotonic() < deadline, "the stand-in server did not start"
        time.sleep(0.05)
    return local_stand_in


def test_while_the_model_loads_generation_answers_503_with_retry_after(local_model, http, writing_prompt) -> None:
    # given: the server loads its model
    body = {"promptId": writing_prompt.pk, "userInput": "Begin.", "maxTokens": 50}
    english = {"Accept-Language": "en"}

    # when
    writing = http.post("/api/v1/generation/writing", json=body, headers=english)
    stream = http.post("/api/v1/generation/writing/stream", json=body)  # in the default language
    chat = http.post(
        "/v1/chat/completions",
        json={"model": "local-smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20},
        headers=english,
    )

    # then
    expected = {"statusCode": 503, "message": LOADING, "error": "Service Unavailable"}
    assert (writing.status_code, writing.headers["Retry-After"], writing.json()) == (503, "2", expected)
    assert (stream.status_code, stream.headers["Retry-After"], stream.json()) == (
        503,
        "2",
        {**expected, "message": "模型正在加载，请几秒后重试。"},
    )
    assert (chat.status_code, chat.headers["Retry-After"]) == (503, "2")
    assert chat.json() == {
        "error": {"message": LOADING, "type": "server_error", "param": None, "code": "upstream_loading"}
    }
    assert Charge.objects.count() == 0
    assert set(Hold.objects.values_list("status", flat=True)) == {"released"}
    assert list(Generation.objects.values_list("status", "error_code")) == [("failed", "upstream_loading")] * 3


def test_once_loaded_the_local_model_answers_and_is_billed(local_model, http, writing_prompt) -> None:
    body = {"promptId": writing_prompt.pk, "userInput": "Begin.", "maxTokens": 50}
    assert http.post("/api/v1/generation/writing", json=body).status_code == 503

    set_mode(local_model, "ready")
    answer = http.post("/api/v1/generation/writing", json=body)

    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert (data["content"], data["model"], data["finishReason"]) == (REPLY, "local-smollm2", "stop")
    assert data["usage"] == {"promptTokens": 7, "completionTokens": 3, "totalTokens": 10}
    charge = Charge.objects.get(generation_id=data["generationId"])
    assert charge.output_chars == len(REPLY)
