"""A multi-turn roleplay chat driven through a real llama.cpp server (skipped without one)."""

from __future__ import annotations

import os
from decimal import Decimal

import orjson
import pytest

from apps.billing.models import Charge
from apps.billing.services import wallet_grant
from apps.characters.models import Character
from apps.generation.models import Generation
from apps.novels.models import Novel
from apps.providers.models import AIModel, Connection
from tests.generation.conftest import sse_events

BASE = os.environ.get("LLAMACPP_BASE_URL", "")

pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.skipif(not BASE, reason="set LLAMACPP_BASE_URL to a running llama.cpp server"),
    pytest.mark.django_db(transaction=True),
]

CARD = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "Sera",
        "description": "{{char}} is a forest guardian who answers briefly.",
        "personality": "Kind.",
        "scenario": "{{user}} meets {{char}} in a glade.",
        "first_mes": "Hello, {{user}}. Who are you?",
        "mes_example": "<START>\n{{user}}: Hi.\n{{char}}: Hello, traveler.",
        "extensions": {},
    },
}


@pytest.fixture
def llama_chat(http, user):
    wallet_grant(user=user, amount=100_000)
    connection = Connection.objects.create(
        name="llama-text-rp", kind="openai_text", base_url=BASE, read_timeout=120, instruct_template="transcript"
    )
    AIModel.objects.create(
        model_id="gemma-rp",
        connection=connection,
        upstream_model="gemma",
        context_tokens=2048,
        max_output_tokens=128,
        input_ratio=Decimal(1),
        output_ratio=Decimal(1),
    )
    novel = Novel.objects.create(owner=user, title="rp")
    character = Character.objects.create(novel=novel, name="Sera")
    response = http.patch(f"/api/v1/characters/{character.pk}", json={"card": CARD})
    assert response.status_code == 200, response.text
    response = http.post("/api/v1/chats", json={"characterId": character.pk})
    assert response.status_code == 201, response.text
    return response.json()


def test_three_turns_through_llamacpp(http, llama_chat):
    chat_id = llama_chat["id"]
    for turn, text in enumerate(["I am Alex, a traveler.", "Where am I?", "Thank you."], start=1):
        response = http.post(
            "/api/v1/generation/roleplay/stream",
            json={"chatId": chat_id, "userInput": text, "modelId": "gemma-rp", "maxTokens": 24, "temperature": 0},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        final = orjson.loads(events[-2])
        assert final["model"] == "gemma-rp" and final["messageId"]
        reply = "".join(orjson.loads(e)["content"] for e in events[:-2])
        messages = http.get(f"/api/v1/chats/{chat_id}/messages").json()["items"]
        # greeting + (user, assistant) per turn, the reply stored as streamed
        assert len(messages) == 1 + 2 * turn
        assert messages[-2]["role"] == "user" and messages[-2]["content"] == text
        assert messages[-1]["role"] == "assistant" and messages[-1]["content"] == reply
        assert messages[-1]["id"] == final["messageId"]
    records = Generation.objects.filter(mode="roleplay", chat_id=chat_id, status="succeeded")
    assert records.count() == 3
    assert Charge.objects.filter(generation_id__in=records.values_list("public_id", flat=True)).count() == 3
