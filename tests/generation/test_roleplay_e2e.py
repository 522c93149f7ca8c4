"""Roleplay mode end to end: uvicorn → Django → fake upstream over real sockets."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from django.db import OperationalError

from apps.billing.models import Charge, Hold, Wallet
from apps.billing.services import wallet_grant
from apps.characters.services import character_create
from apps.generation.models import Chat, ChatMessage, Generation
from apps.novels.models import Novel
from apps.worldviews.models import Lorebook, LorebookEntry
from tests.fakes.upstream import Reply
from tests.generation.conftest import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

MAIN = "Write Sera's next reply in a fictional chat between Sera and Alex."
CARD: dict[str, Any] = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "Seraphina",
        "nickname": "Sera",
        "description": "{{char}} guards the forest.",
        "personality": "Kind.",
        "scenario": "{{user}} wakes in {{char}}'s glade.",
        "first_mes": "*{{char}} smiles at {{user}}.* Awake!",
        "alternate_greetings": ["Hello, {{user}}."],
        "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: I am {{char}}.\n<START>\n{{char}}: Quiet here.",
        "system_prompt": "",
        "post_history_instructions": "",
        "tags": [],
        "creator": "",
        "character_version": "",
        "extensions": {},
    },
}


@pytest.fixture(autouse=True)
def funds(request, user):
    if "no_funds" not in request.keywords:
        wallet_grant(user=user, amount=100_000)


@pytest.fixture
def character(user):
    novel = Novel.objects.create(owner=user, title="林")
    return character_create(user=user, novel_id=novel.pk, card=CARD)


@pytest.fixture
def persona(http):
    response = http.post("/api/v1/personas", json={"name": "Alex", "description": "{{user}} is a traveler."})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def chat(http, character, persona, make_model):
    make_model(context_tokens=8192, max_output_tokens=1024)
    response = http.post("/api/v1/chats", json={"characterId": character.pk, "personaId": persona["id"]})
    assert response.status_code == 201, response.text
    return response.json()


def messages_of(http, chat_id):
    response = http.get(f"/api/v1/chats/{chat_id}/messages")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def generate(http, chat_id, **body):
    return http.post("/api/v1/generation/roleplay", json={"chatId": chat_id, "maxTokens": 1024, **body})


def sent(fake_upstream):
    return fake_upstream.completion_requests[-1].json["messages"]


# ------------------------------------------------------------------------------- chats and messages


def test_new_chat_opens_with_the_greeting_and_alternates_as_swipes(http, chat, character, persona):
    assert set(chat) == {
        "id",
        "characterId",
        "personaId",
        "lorebookIds",
        "authorsNote",
        "scenarioOverride",
        "variables",
        "createdAt",
        "updatedAt",
    }
    assert chat["characterId"] == character.pk and chat["personaId"] == persona["id"]
    assert chat["authorsNote"] == {"text": "", "depth": 4, "frequency": 1, "role": "system", "position": "in_chat"}
    [greeting] = messages_of(http, chat["id"])
    assert greeting["role"] == "assistant" and greeting["name"] == "Sera"
    assert greeting["content"] == "*Sera smiles at Alex.* Awake!"
    assert greeting["swipes"] == ["*Sera smiles at Alex.* Awake!", "Hello, Alex."]
    assert greeting["swipeId"] == 0 and greeting["hidden"] is False


def test_without_persona_user_is_the_username(http, character, make_model):
    response = http.post("/api/v1/chats", json={"characterId": character.pk})
    assert response.status_code == 201 and response.json()["personaId"] is None
    assert messages_of(http, response.json()["id"])[0]["swipes"][1] == "Hello, alice."


def test_message_patch_and_delete(http, chat):
    [greeting] = messages_of(http, chat["id"])
    url = f"/api/v1/chats/{chat['id']}/messages/{greeting['id']}"
    body = http.patch(url, json={"swipeId": 1}).json()
    assert body["content"] == "Hello, Alex." and body["swipeId"] == 1
    body = http.patch(url, json={"content": "Hi there.", "hidden": True}).json()
    assert body["swipes"] == ["*Sera smiles at Alex.* Awake!", "Hi there."] and body["hidden"] is True
    bad = http.patch(url, json={"swipeId": 5}, headers={"Accept-Language": "en"})
    assert bad.status_code == 400 and "swipeId" in bad.json()["details"]
    assert http.delete(url).status_code == 204
    assert messages_of(http, chat["id"]) == []


def test_another_users_chat_is_404(http, chat, other_user, live_server_url):
    from apps.accounts.services import token_create

    other = httpx.Client(
        base_url=live_server_url, headers={"Authorization": f"Bearer {token_create(user=other_user).token}"}
    )
    with other:
        assert other.get(f"/api/v1/chats/{chat['id']}").status_code == 404
        assert other.get(f"/api/v1/chats/{chat['id']}/messages").status_code == 404
        assert other.patch(f"/api/v1/chats/{chat['id']}", json={"scenarioOverride": "x"}).status_code == 404
        assert other.delete(f"/api/v1/chats/{chat['id']}").status_code == 404
        response = other.post("/api/v1/generation/roleplay", json={"chatId": chat["id"], "userInput": "hi"})
        assert response.status_code == 404
        assert other.post("/api/v1/generation/roleplay/preview", json={"chatId": chat["id"]}).status_code == 404
        assert other.get("/api/v1/chats").json()["items"] == []
    assert Chat.objects.filter(pk=chat["id"]).exists() and Generation.objects.count() == 0


# -------------------------------------------------------------------------------------- assembly


def test_normal_turn_sends_st_order_and_persists_input_and_reply(http, chat, fake_upstream):
    fake_upstream.script(Reply(chunks=["*Sera nods.*", " Welcome."]))
    response = generate(http, chat["id"], userInput="Hi, {{char}}.")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == "*Sera nods.* Welcome." and body["generationId"].startswith("gen_")
    assert set(body) == {
        "content",
        "generationId",
        "model",
        "usage",
        "finishReason",
        "duration",
        "consumption",
        "messageId",
    }
    assert sent(fake_upstream) == [
        {"role": "system", "content": MAIN},
        {"role": "system", "content": "Alex is a traveler."},
        {"role": "system", "content": "Sera guards the forest."},
        {"role": "system", "content": "Kind."},
        {"role": "system", "content": "Alex wakes in Sera's glade."},
        {"role": "system", "content": "[Example Chat]"},
        {"role": "system", "content": "Who are you?", "name": "example_user"},
        {"role": "system", "content": "I am Sera.", "name": "example_assistant"},
        {"role": "system", "content": "[Example Chat]"},
        {"role": "system", "content": "Quiet here.", "name": "example_assistant"},
        {"role": "system", "content": "[Start a new Chat]"},
        {"role": "assistant", "content": "*Sera smiles at Alex.* Awake!"},
        {"role": "user", "content": "Hi, Sera."},
    ]
    items = messages_of(http, chat["id"])
    assert [(m["role"], m["name"], m["content"]) for m in items] == [
        ("assistant", "Sera", "*Sera smiles at Alex.* Awake!"),
        ("user", "Alex", "Hi, Sera."),
        ("assistant", "Sera", "*Sera nods.* Welcome."),
    ]
    assert body["messageId"] == items[2]["id"]
    record = Generation.objects.get(public_id=body["generationId"])
    assert record.mode == "roleplay" and record.chat_id == chat["id"] and record.status == "succeeded"
    assert Charge.objects.get(generation_id=record.public_id).output_chars == len(body["content"])


def test_card_overrides_with_original_and_depth_prompt(http, chat, character, fake_upstream):
    card = {**CARD, "data": {**CARD["data"]}}
    card["data"]["system_prompt"] = "{{original}} Stay in character."
    card["data"]["post_history_instructions"] = "Reply in under 50 words."
    card["data"]["extensions"] = {"depth_prompt": {"prompt": "{{char}} is tired.", "depth": 0, "role": "system"}}
    card["data"]["mes_example"] = ""
    response = http.patch(f"/api/v1/characters/{character.pk}", json={"card": card})
    assert response.status_code == 200, response.text
    assert generate(http, chat["id"], userInput="Hello").status_code == 200
    assert sent(fake_upstream) == [
        {"role": "system", "content": MAIN + " Stay in character."},
        {"role": "system", "content": "Alex is a traveler."},
        {"role": "system", "content": "Sera guards the forest."},
        {"role": "system", "content": "Kind."},
        {"role": "system", "content": "Alex wakes in Sera's glade."},
        {"role": "system", "content": "[Start a new Chat]"},
        {"role": "assistant", "content": "*Sera smiles at Alex.* Awake!"},
        {"role": "user", "content": "Hello"},
        {"role": "system", "content": "Sera is tired."},
        {"role": "system", "content": "Reply in under 50 words."},
    ]


def _book(user, entries, **fields):
    book = Lorebook.objects.create(owner=user, name=fields.pop("name", "Forest"), **fields)
    for uid, data in enumerate(entries):
        LorebookEntry.objects.create(lorebook=book, uid=uid, data={"uid": uid, **data})
    return book


def _entry(content, *, keys=(), constant=False, position=0, **extra):
    return {
        "key": list(keys),
        "content": content,
        "constant": constant,
        "position": position,
        "order": extra.pop("order", 100),
        **extra,
    }


def test_world_info_before_after_depth_and_authors_note_entries(http, user, chat, fake_upstream):
    book = _book(
        user,
        [
            _entry("The forest is ancient.", constant=True, position=0),
            _entry("Wolves roam at night.", keys=["wolf"], position=1),
            _entry("A wolf howls nearby.", keys=["wolf"], position=4, depth=1, role=0),
            _entry("[Mood: tense]", keys=["wolf"], position=2),
        ],
    )
    http.patch(
        f"/api/v1/chats/{chat['id']}",
        json={"lorebookIds": [book.pk], "authorsNote": {"text": "Keep it short.", "depth": 0, "frequency": 1}},
    )
    assert generate(http, chat["id"], userInput="Is that a wolf?").status_code == 200
    assert sent(fake_upstream)[:1] == [{"role": "system", "content": MAIN}]
    tail = sent(fake_upstream)[1:]
    assert tail == [
        {"role": "system", "content": "The forest is ancient."},
        {"role": "system", "content": "Alex is a traveler."},
        {"role": "system", "content": "Sera guards the forest."},
        {"role": "system", "content": "Kind."},
        {"role": "system", "content": "Alex wakes in Sera's glade."},
        {"role": "system", "content": "Wolves roam at night."},
        {"role": "system", "content": "[Example Chat]"},
        {"role": "system", "content": "Who are you?", "name": "example_user"},
        {"role": "system", "content": "I am Sera.", "name": "example_assistant"},
        {"role": "system", "content": "[Example Chat]"},
        {"role": "system", "content": "Quiet here.", "name": "example_assistant"},
        {"role": "system", "content": "[Start a new Chat]"},
        {"role": "assistant", "content": "*Sera smiles at Alex.* Awake!"},
        {"role": "system", "content": "A wolf howls nearby."},
        {"role": "user", "content": "Is that a wolf?"},
        {"role": "system", "content": "[Mood: tense]\nKeep it short."},
    ]
    assert Chat.objects.get(pk=chat["id"]).lorebooks.count() == 1


def test_authors_note_at_depth_2_every_second_turn(http, chat, fake_upstream):
    http.patch(f"/api/v1/chats/{chat['id']}", json={"authorsNote": {"text": "NOTE", "depth": 2, "frequency": 2}})
    http.patch(
        f"/api/v1/chats/{chat['id']}",
        json={"authorsNote": {"text": "NOTE", "depth": 2, "frequency": 2}},
    )
    seen = []
    for turn in range(1, 5):
        fake_upstream.script(Reply(chunks=[f"reply {turn}"]))
        assert generate(http, chat["id"], userInput=f"turn {turn}").status_code == 200
        messages = sent(fake_upstream)
        seen.append([i for i, m in enumerate(messages) if m["content"] == "NOTE"])
        if turn == 2:
            # depth 2: before the last two messages (the reply 1 and the input "turn 2")
            assert [m["content"] for m in messages[-4:]] == ["turn 1", "NOTE", "reply 1", "turn 2"]
    assert [bool(s) for s in seen] == [False, True, False, True]


def test_tight_budget_drops_examples_then_old_history(http, user, character, persona, make_model, fake_upstream):
    # mandatory ≈ 56 tokens; each history line 6 tokens; examples blocks 4 + 3 + 3 and 4 + 3 tokens
    make_model("tiny", context_tokens=100 + 20, max_output_tokens=20)
    chat_id = http.post("/api/v1/chats", json={"characterId": character.pk, "personaId": persona["id"]}).json()["id"]
    body = {"chatId": chat_id, "modelId": "tiny", "maxTokens": 20}
    preview = http.post("/api/v1/generation/roleplay/preview", json={**body, "userInput": "hello"}).json()
    names = [b["name"] for b in preview["blocks"]]
    assert "dialogueExamples" in names and preview["budget"]["limit"] == 100
    assert preview["budget"]["used"] <= 100
    chat = Chat.objects.get(pk=chat_id)
    for i in range(8):
        ChatMessage.objects.create(chat=chat, role="user" if i % 2 else "assistant", swipes=[f"line number {i:02d}"])
    preview = http.post("/api/v1/generation/roleplay/preview", json={**body, "userInput": "hello"}).json()
    contents = [m["content"] for m in preview["messages"]]
    assert "[Example Chat]" not in contents
    assert "dialogueExamples" not in [b["name"] for b in preview["blocks"]]
    assert contents[-1] == "hello" and "line number 07" in contents
    assert "*Sera smiles at Alex.* Awake!" not in contents  # the oldest went first
    assert preview["historyDropped"] > 0 and preview["budget"]["used"] <= 100
    kept = [c for c in contents if c.startswith("line number")]
    assert kept == [f"line number {i:02d}" for i in range(8 - len(kept), 8)]  # newest kept, contiguous


def test_mandatory_prompts_over_budget_is_400_and_nothing_written(http, character, persona, make_model):
    make_model("tiny", context_tokens=40, max_output_tokens=20)
    chat_id = http.post("/api/v1/chats", json={"characterId": character.pk, "personaId": persona["id"]}).json()["id"]
    response = generate(http, chat_id, userInput="hi", modelId="tiny", maxTokens=20)
    assert response.status_code == 400 and response.json()["error"] == "Bad Request"
    assert Generation.objects.count() == 0 and Hold.objects.count() == 0
    assert ChatMessage.objects.filter(chat_id=chat_id).count() == 1


# ------------------------------------------------------------------------------ generation types


def test_continue_appends_to_the_last_reply_with_prefill(http, chat, fake_upstream):
    fake_upstream.script(Reply(chunks=[" She waves."]))
    body = generate(http, chat["id"], generationType="continue", userInput="ignored").json()
    assert sent(fake_upstream)[-1] == {"role": "assistant", "content": "*Sera smiles at Alex.* Awake!"}
    # the continued message left the history, which is now empty (no new-chat marker either)
    assert sent(fake_upstream)[-2] == {"role": "system", "content": "Quiet here.", "name": "example_assistant"}
    [message] = messages_of(http, chat["id"])
    assert message["id"] == body["messageId"]
    assert message["content"] == "*Sera smiles at Alex.* Awake! She waves."
    assert message["swipes"][1] == "Hello, Alex."


def test_swipe_adds_a_swipe_and_regenerate_replaces_keeping_the_old(http, chat, fake_upstream):
    fake_upstream.script(Reply(chunks=["first"]), Reply(chunks=["second"]), Reply(chunks=["third"]))
    generate(http, chat["id"], userInput="Hi")
    [_greeting, _user, reply] = messages_of(http, chat["id"])
    assert reply["swipes"] == ["first"]
    body = generate(http, chat["id"], generationType="swipe").json()
    assert body["messageId"] == reply["id"]
    # the swiped message is not part of the context: the prompt ends with the user's line
    assert sent(fake_upstream)[-1] == {"role": "user", "content": "Hi"}
    reply = messages_of(http, chat["id"])[2]
    assert reply["swipes"] == ["first", "second"] and reply["swipeId"] == 1 and reply["content"] == "second"
    generate(http, chat["id"], generationType="regenerate")
    items = messages_of(http, chat["id"])
    assert len(items) == 3
    assert items[2]["swipes"] == ["first", "second", "third"] and items[2]["content"] == "third"


def test_swipe_without_assistant_message_is_400(http, chat, fake_upstream):
    [greeting] = messages_of(http, chat["id"])
    http.delete(f"/api/v1/chats/{chat['id']}/messages/{greeting['id']}")
    response = generate(http, chat["id"], generationType="swipe")
    assert response.status_code == 400 and "generationType" in response.json()["details"]
    assert Generation.objects.count() == 0


def test_impersonate_returns_a_user_side_message_and_stores_nothing(http, chat, fake_upstream):
    fake_upstream.script(Reply(chunks=["I look around."]))
    body = generate(http, chat["id"], generationType="impersonate").json()
    assert body["content"] == "I look around." and body["messageId"] is None
    assert sent(fake_upstream)[-1]["content"].startswith("[Write your next reply from the point of view of Alex")
    assert len(messages_of(http, chat["id"])) == 1
    assert Charge.objects.get(generation_id=body["generationId"]).output_chars == len("I look around.")


# ---------------------------------------------------------------------------------- state across turns


def test_sticky_and_cooldown_across_turns(http, user, chat, fake_upstream):
    # ST counts timed effects in chat messages (two per turn): sticky 3 outlasts the next turn,
    # then a protected cooldown of 3 blocks the key for two turns
    book = _book(user, [_entry("DRAGON LORE", keys=["dragon"], sticky=3, cooldown=3)])
    http.patch(f"/api/v1/chats/{chat['id']}", json={"lorebookIds": [book.pk]})
    active = []
    for text in ["a dragon!", "ok", "dragon?", "dragon!", "dragon again"]:
        fake_upstream.script(Reply(chunks=["fine"]))
        assert generate(http, chat["id"], userInput=text).status_code == 200
        active.append(any(m["content"] == "DRAGON LORE" for m in sent(fake_upstream)))
    assert active == [True, True, False, False, True]
    assert Chat.objects.get(pk=chat["id"]).timed_state != {}


def test_chat_variables_across_turns(http, chat, character, fake_upstream):
    card = {**CARD, "data": {**CARD["data"], "post_history_instructions": "Mood: {{getvar::mood}}", "mes_example": ""}}
    http.patch(f"/api/v1/characters/{character.pk}", json={"card": card})
    generate(http, chat["id"], userInput="{{setvar::mood::happy}}Hello")
    assert messages_of(http, chat["id"])[1]["content"] == "Hello"
    assert http.get(f"/api/v1/chats/{chat['id']}").json()["variables"] == {"mood": "happy"}
    generate(http, chat["id"], userInput="{{addvar::count::1}}Again")
    assert sent(fake_upstream)[-1] == {"role": "system", "content": "Mood: happy"}
    assert http.get(f"/api/v1/chats/{chat['id']}").json()["variables"] == {"mood": "happy", "count": 1}


def test_global_variables_are_the_users_across_chats(http, chat, character, fake_upstream, make_user):
    from apps.generation.models import GlobalVariables
    from apps.generation.roleplay.services import global_variables

    card = {**CARD, "data": {**CARD["data"], "post_history_instructions": "Mood: {{getglobalvar::mood}}"}}
    http.patch(f"/api/v1/characters/{character.pk}", json={"card": card})
    assert generate(http, chat["id"], userInput="{{setglobalvar::mood::calm}}Hello").status_code == 200
    assert sent(fake_upstream)[-1] == {"role": "system", "content": "Mood: calm"}
    # a second chat of the same user sees it; the chat's own variables stay its own
    other = http.post("/api/v1/chats", json={"characterId": character.pk}).json()
    assert generate(http, other["id"], userInput="{{addglobalvar::turns::1}}Hi").status_code == 200
    assert sent(fake_upstream)[-1] == {"role": "system", "content": "Mood: calm"}
    assert http.get(f"/api/v1/chats/{other['id']}").json()["variables"] == {}
    assert GlobalVariables.objects.get().variables == {"mood": "calm", "turns": 1}
    assert global_variables(user=make_user("someone-else")) == {}
    # a failed turn does not keep its changes, and the preview never stores anything
    fake_upstream.default = Reply(status=500)
    assert generate(http, chat["id"], userInput="{{setglobalvar::mood::angry}}No").status_code == 502
    preview = http.post(
        "/api/v1/generation/roleplay/preview", json={"chatId": chat["id"], "userInput": "{{setglobalvar::mood::x}}"}
    )
    assert preview.status_code == 200
    assert GlobalVariables.objects.get().variables == {"mood": "calm", "turns": 1}


# -------------------------------------------------------------------------------- failure and cancel


def test_failed_generation_leaves_the_chat_unchanged_and_charges_nothing(http, user, chat, fake_upstream):
    fake_upstream.default = Reply(status=500)
    before = messages_of(http, chat["id"])
    for url in ("/api/v1/generation/roleplay", "/api/v1/generation/roleplay/stream"):
        response = http.post(url, json={"chatId": chat["id"], "userInput": "{{setvar::x::1}}Hello"})
        assert response.status_code == 502, response.text
    assert messages_of(http, chat["id"]) == before
    assert Chat.objects.get(pk=chat["id"]).variables == {}
    assert Charge.objects.count() == 0
    assert set(Hold.objects.values_list("status", flat=True)) == {"released"}
    assert Wallet.objects.get(pk=user.pk).paid_held == 0


def test_stream_failure_after_first_token_writes_nothing(http, chat, fake_upstream):
    fake_upstream.script(Reply(chunks=["一", "二", "三"], reset_after=2))
    response = http.post("/api/v1/generation/roleplay/stream", json={"chatId": chat["id"], "userInput": "Hi"})
    events = sse_events(response.text)
    assert orjson.loads(events[-2])["error"]["statusCode"] == 502
    assert len(messages_of(http, chat["id"])) == 1 and Charge.objects.count() == 0


def test_stream_final_event_carries_message_id(http, chat, fake_upstream):
    fake_upstream.script(Reply(chunks=["a", "b"]))
    response = http.post("/api/v1/generation/roleplay/stream", json={"chatId": chat["id"], "userInput": "Hi"})
    events = sse_events(response.text)
    assert events[:2] == ['{"content":"a"}', '{"content":"b"}'] and events[-1] == "[DONE]"
    final = orjson.loads(events[-2])
    assert final["messageId"] == messages_of(http, chat["id"])[-1]["id"]
    assert set(final) == {
        "content",
        "finishReason",
        "generationId",
        "model",
        "usage",
        "duration",
        "consumption",
        "messageId",
    }


def _status():
    """The record's status; None while the server's finish transaction holds SQLite's shared-cache
    table lock (the in-memory test database answers "table is locked" instead of waiting)."""
    try:
        return Generation.objects.get().status
    except OperationalError:
        return None


def test_cancelled_stream_keeps_the_partial_reply_and_charges_it(live_server_url, token, chat, fake_upstream):
    fake_upstream.script(Reply(chunks=[f"p{i}" for i in range(200)], chunk_delay=0.05))
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=live_server_url, headers=headers) as client,
        client.stream(
            "POST", "/api/v1/generation/roleplay/stream", json={"chatId": chat["id"], "userInput": "Go"}
        ) as response,
    ):
        received = 0
        for line in response.iter_lines():
            if line.startswith('data: {"content":"p'):
                received += 1
            if received == 3:
                break
    deadline = time.monotonic() + 5
    while not fake_upstream.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_upstream.disconnects and fake_upstream.disconnects[0].events_sent < 100
    deadline = time.monotonic() + 5
    while _status() in ("pending", None) and time.monotonic() < deadline:
        time.sleep(0.02)
    record = Generation.objects.get()
    assert record.status == "cancelled" and record.content.startswith("p0p1p2")
    rows = list(ChatMessage.objects.filter(chat_id=chat["id"]).order_by("id"))
    assert [r.role for r in rows] == ["assistant", "user", "assistant"]
    assert rows[1].content == "Go" and rows[2].content == record.content
    assert Charge.objects.get(generation_id=record.public_id).output_chars == len(record.content)


# ------------------------------------------------------------------------------ permission, preview


def test_without_permission_403(http, user, chat):
    user.groups.clear()
    for url in (
        "/api/v1/generation/roleplay",
        "/api/v1/generation/roleplay/stream",
        "/api/v1/generation/roleplay/preview",
    ):
        response = http.post(url, json={"chatId": chat["id"]})
        assert response.status_code == 403 and response.json()["statusCode"] == 403
    assert Generation.objects.count() == 0


def test_preview_matches_the_real_run_and_writes_nothing(http, user, chat, fake_upstream):
    book = _book(user, [_entry("Lore.", keys=["forest"], probability=50, useProbability=True)])
    http.patch(f"/api/v1/chats/{chat['id']}", json={"lorebookIds": [book.pk]})
    before = (messages_of(http, chat["id"]), Chat.objects.get(pk=chat["id"]).timed_state)
    body = {"chatId": chat["id"], "userInput": "the forest", "maxTokens": 1024}
    preview = http.post("/api/v1/generation/roleplay/preview", json=body)
    assert preview.status_code == 200, preview.text
    data = preview.json()
    assert set(data) >= {"messages", "blocks", "budget", "trace"}
    assert data["budget"]["limit"] == 8192 - 1024
    assert data["budget"]["used"] == sum(b["tokens"] for b in data["blocks"])
    assert [t["uid"] for t in data["trace"]] == [0]
    assert not fake_upstream.completion_requests and Generation.objects.count() == 0
    assert (messages_of(http, chat["id"]), Chat.objects.get(pk=chat["id"]).timed_state) == before
    assert Wallet.objects.get(pk=user.pk).paid_held == 0
    # the real run of the same turn sends exactly the previewed messages (same seeded rolls)
    generate(http, chat["id"], userInput="the forest")
    assert sent(fake_upstream) == data["messages"]


def test_outlet_entries_fill_outlet_macros_and_persona_at_depth(http, user, chat, character, persona, fake_upstream):
    book = _book(user, [_entry("Hidden lore.", constant=True, position=7, outletName="lore")])
    card = {**CARD, "data": {**CARD["data"], "system_prompt": "{{original}} {{outlet::lore}}", "mes_example": ""}}
    assert http.patch(f"/api/v1/characters/{character.pk}", json={"card": card}).status_code == 200
    http.patch(f"/api/v1/chats/{chat['id']}", json={"lorebookIds": [book.pk]})
    http.patch(
        f"/api/v1/personas/{persona['id']}", json={"descriptionPosition": "at_depth", "depth": 0, "role": "user"}
    )
    preview = http.post("/api/v1/generation/roleplay/preview", json={"chatId": chat["id"], "userInput": "Hi"}).json()
    messages = preview["messages"]
    assert messages[0] == {"role": "system", "content": MAIN + " Hidden lore."}
    assert "Hidden lore." not in [m["content"] for m in messages[1:]]
    assert messages[-2:] == [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Alex is a traveler."}]
    assert [t["status"] for t in preview["trace"]] == ["activated"]


def test_admin_pages_render(admin_client, chat, fake_upstream, http):
    generate(http, chat["id"], userInput="Hi")
    for name in ("generation", "chat", "persona"):
        assert admin_client.get(f"/admin/generation/{name}/").status_code == 200
    assert admin_client.get(f"/admin/generation/chat/{chat['id']}/change/").status_code == 200
    assert admin_client.get("/admin/generation/generation/add/").status_code == 403


def test_persona_crud_keeps_one_default(http, other_user, live_server_url):
    first = http.post("/api/v1/personas", json={"name": "A", "isDefault": True}).json()
    assert first["descriptionPosition"] == "in_prompt" and first["isDefault"] is True
    second = http.post("/api/v1/personas", json={"name": "B", "isDefault": True}).json()
    items = http.get("/api/v1/personas").json()["items"]
    assert [(p["name"], p["isDefault"]) for p in items] == [("A", False), ("B", True)]
    patched = http.patch(f"/api/v1/personas/{first['id']}", json={"descriptionPosition": "none"}).json()
    assert patched["descriptionPosition"] == "none" and patched["name"] == "A"
    bad = http.post("/api/v1/personas", json={"name": "C", "descriptionPosition": "sideways"})
    assert bad.status_code == 400 and "descriptionPosition" in bad.json()["details"]
    assert http.delete(f"/api/v1/personas/{second['id']}").status_code == 204
    assert http.get(f"/api/v1/personas/{second['id']}").status_code == 404


@pytest.mark.no_funds
def test_a_turn_stops_where_the_balance_ends_and_the_chat_keeps_what_was_delivered(http, chat, fake_upstream, settings):
    settings.BILLING_DAILY_FREE_QUOTA = 30  # the chat's prompt is below the input threshold: 30 output characters
    fake_upstream.script(Reply(chunks=["Sera nods slowly. "] * 10, chunk_delay=0.01))

    response = generate(http, chat["id"], userInput="Hello")

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["content"] == ("Sera nods slowly. " * 2)[:30]
    assert answer["finishReason"] == "length" and answer["consumption"]["stoppedByBalance"] is True
    assert messages_of(http, chat["id"])[-1]["content"] == answer["content"]
    assert generate(http, chat["id"], userInput="More?").status_code == 402
