"""Writing generation through the service against a real llama.cpp server (chat and text completions).

Skipped unless LLAMACPP_BASE_URL points at one (`scripts/llamacpp_server.py PORT`; CI starts it).
Deselect locally with `-m "not llamacpp"`.
"""

from __future__ import annotations

import os
from decimal import Decimal

import orjson
import pytest

from apps.billing.models import Charge
from apps.billing.services import wallet_grant
from apps.generation.models import Generation
from apps.providers.models import AIModel, Connection
from tests.generation.conftest import sse_events

BASE = os.environ.get("LLAMACPP_BASE_URL", "")

pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.skipif(not BASE, reason="set LLAMACPP_BASE_URL to a running llama.cpp server"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def llama_models(user):
    wallet_grant(user=user, amount=100_000)
    chat = Connection.objects.create(name="llama-chat", kind="openai", base_url=BASE, read_timeout=120)
    text = Connection.objects.create(
        name="llama-text", kind="openai_text", base_url=BASE, read_timeout=120, instruct_template="transcript"
    )
    for model_id, connection in (("gemma-chat", chat), ("gemma-text", text)):
        AIModel.objects.create(
            model_id=model_id,
            connection=connection,
            upstream_model="gemma",
            context_tokens=2048,
            max_output_tokens=256,
            input_ratio=Decimal(1),
            output_ratio=Decimal(1),
        )


@pytest.mark.parametrize("model_id", ["gemma-chat", "gemma-text"])
def test_non_stream_generation_against_llamacpp(http, writing_prompt, llama_models, model_id):
    response = http.post(
        "/api/v1/generation/writing",
        json={
            "promptId": writing_prompt.pk,
            "userInput": "Name three colours.",
            "modelId": model_id,
            "maxTokens": 24,
            "temperature": 0,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model_id and body["finishReason"] in ("stop", "length")
    assert body["usage"]["completionTokens"] > 0 and body["usage"]["promptTokens"] > 0
    record = Generation.objects.get(public_id=body["generationId"])
    assert record.status == "succeeded" and record.usage_estimated is False
    assert Charge.objects.get(generation_id=body["generationId"]).output_chars == len(body["content"])


@pytest.mark.parametrize("model_id", ["gemma-chat", "gemma-text"])
def test_stream_generation_against_llamacpp(http, writing_prompt, llama_models, model_id):
    response = http.post(
        "/api/v1/generation/writing/stream",
        json={
            "promptId": writing_prompt.pk,
            "userInput": "Name three colours.",
            "modelId": model_id,
            "maxTokens": 24,
            "temperature": 0,
        },
        timeout=120,
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    final = orjson.loads(events[-2])
    assert final["model"] == model_id and final["usage"]["completionTokens"] > 0
    text = "".join(orjson.loads(e)["content"] for e in events[:-2])
    assert Generation.objects.get(public_id=final["generationId"]).content == text
