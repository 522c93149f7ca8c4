"""The lorebook dry run (`POST /api/v1/lorebooks/activate`) runs the roleplay turn's own world-info
path: the same macro context (names, card, chat variables, the request clock), macros expanded in keys
before matching and in contents before the budget. It and generation must agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.conf import settings

from apps.characters.services import character_create
from apps.generation.models import Chat, ChatMessage
from apps.generation.roleplay.services import RoleplayRequest, chat_create, persona_save, roleplay_plan
from apps.macros import limits
from apps.novels.models import Novel
from apps.providers.models import AIModel, Connection
from apps.providers.tokens import estimate_tokens
from apps.worldviews.models import Lorebook, LorebookEntry

pytestmark = pytest.mark.django_db

URL = "/api/v1/lorebooks/activate"
PREVIEW = "/api/v1/generation/roleplay/preview"

CARD: dict[str, Any] = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "Seraphina",
        "nickname": "Seraphina-of-the-Glade",
        "description": "{{char}} guards the forest.",
        "personality": "",
        "scenario": "",
        "first_mes": "Awake, {{user}}?",
        "mes_example": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "tags": ["forest"],
        "extensions": {},
    },
}
OATH = "{{char}} and {{user}} swore it; {{user}} keeps {{char}}'s oath."
FROZEN = datetime(2026, 1, 5, 7, 45, tzinfo=UTC)  # 15:45 in Asia/Shanghai


@pytest.fixture(autouse=True)
def _frozen_clock(monkeypatch):
    monkeypatch.setattr(limits, "now", lambda: FROZEN)


def book_of(owner, *entries: dict[str, Any], **fields: Any) -> Lorebook:
    book = Lorebook.objects.create(owner=owner, name="b", **fields)
    for uid, data in enumerate(entries):
        LorebookEntry.objects.create(lorebook=book, uid=uid, data={"uid": uid, **data})
    return book


@pytest.fixture
def character(user):
    novel = Novel.objects.create(owner=user, title="林")
    return character_create(user=user, novel_id=novel.pk, card=CARD)


@pytest.fixture
def persona(user):
    return persona_save(user=user, name="Alexandria", description="{{user}} is lost.", is_default=True)


def plan(user, chat: Chat, *, limit: int):
    req = RoleplayRequest(
        chat_id=chat.pk, user_input="", generation_type="normal", model_id="m", temperature=0.7, max_tokens=None
    )
    return roleplay_plan(user=user, chat=Chat.objects.get(pk=chat.pk), req=req, limit=limit, model_id="m")


def trace_of(body: dict[str, Any], uid: int) -> dict[str, Any]:
    return next(t for t in body["trace"] if t["uid"] == uid)


# ------------------------------------------------------------------- the budget counts expanded text


def test_a_cap_between_the_raw_and_the_expanded_size_drops_the_entry_in_the_dry_run_and_in_generation(
    api, user, character, persona
):
    # given: an entry whose {{char}}/{{user}} expand to longer names, and a cap between the two sizes
    expanded = OATH.replace("{{char}}", "Seraphina-of-the-Glade").replace("{{user}}", "Alexandria")
    raw_cost, cost = estimate_tokens(OATH + "\n"), estimate_tokens(expanded + "\n")
    cap = cost  # ST's check is `total >= budget`: the expanded entry reaches it, the raw one would not
    assert raw_cost < cap
    book = book_of(user, {"key": ["oath"], "content": OATH})
    chat = chat_create(user=user, character_id=character.pk, lorebook_ids=[book.pk])
    ChatMessage.objects.create(chat=chat, role="user", name="Alexandria", swipes=["Tell me of the oath."])

    # when: the dry run with the chat, with the cap
    dry = api.post(URL, {"chatId": chat.pk, "settings": {"budgetCap": cap}, "maxContext": 100_000}, format="json")
    # and generation, whose 25 % budget of the limit is the same cap
    turn = plan(user, chat, limit=4 * cap)

    # then: both drop it for the budget, having counted the expanded content
    assert dry.status_code == 200, dry.json()
    body = dry.json()
    assert body["budget"] == {"limit": cap, "used": 0, "overflowed": True}
    item = trace_of(body, 0)
    assert (item["status"], item["reason"], item["tokens"], item["budgetTotal"]) == ("skipped", "budget", cost, cost)
    assert (item["matchedKey"], item["matchedText"]) == ("oath", "oath")
    assert item["matchedIn"] == {"source": "chat", "index": 0, "lorebookId": None, "uid": None}
    generated = next(t for t in turn.activation.trace if t.uid == 0)
    assert (generated.status, generated.reason, generated.tokens) == ("skipped", "budget", cost)
    assert turn.activation.budget_limit == cap and turn.activation.activated == []

    # one token more and both keep it, with its macros expanded
    dry = api.post(URL, {"chatId": chat.pk, "settings": {"budgetCap": cap + 1}}, format="json").json()
    turn = plan(user, chat, limit=4 * (cap + 1))
    assert [e["content"] for e in dry["activated"]] == [expanded]
    assert [e.content for e in turn.activation.activated] == [expanded]
    assert dry["budget"]["used"] == turn.activation.budget_used == cost


def test_without_a_chat_the_dry_run_uses_the_character_and_persona_generation_would(api, user, character, persona):
    # the book is linked to the character (so only its chats use it) and the persona is the default one
    expanded = OATH.replace("{{char}}", "Seraphina-of-the-Glade").replace("{{user}}", "Alexandria")
    book = book_of(user, {"key": ["oath"], "content": OATH}, character=character)

    body = api.post(
        URL, {"lorebookIds": [book.pk], "chat": [{"role": "user", "content": "the oath"}], "seed": 3}, format="json"
    ).json()

    assert [e["content"] for e in body["activated"]] == [expanded]
    assert body["context"] == {
        "userName": "Alexandria",
        "charName": "Seraphina-of-the-Glade",
        "characterId": character.pk,
        "personaId": persona.pk,
        "chatId": None,
    }
    assert body["seed"] == 3
    assert trace_of(body, 0)["tokens"] == estimate_tokens(expanded + "\n")


def test_names_given_in_the_request(api, user, persona):
    book = book_of(user, {"key": ["oath"], "content": "{{user}}/{{char}}"})
    chat = [{"role": "user", "content": "oath"}]

    named = api.post(URL, {"lorebookIds": [book.pk], "chat": chat, "userName": "Bo", "charName": "Li"}, format="json")
    unnamed = api.post(URL, {"lorebookIds": [book.pk], "chat": chat}, format="json")

    assert named.json()["activated"][0]["content"] == "Bo/Li"
    assert named.json()["context"]["personaId"] is None  # a given name replaces the default persona
    # no character: {{char}} is empty; the default persona stands for {{user}}
    assert unnamed.json()["activated"][0]["content"] == "Alexandria/"


# ------------------------------------------------------------------------------------ macros in keys


@pytest.mark.parametrize(
    ("context", "activated"),
    [
        ({"charName": "Sera"}, True),
        ({"charName": "Lin"}, False),
        ({}, False),  # no character: the key is "-blade", which "Sera-blade" holds only inside a word
    ],
)
def test_a_key_with_a_macro_is_expanded_before_matching(api, user, context, activated):
    book = book_of(user, {"key": ["{{char}}-blade"], "content": "It is sharp."})

    body = api.post(
        URL,
        {"lorebookIds": [book.pk], "chat": [{"name": "Bo", "content": "I take the Sera-blade."}], **context},
        format="json",
    ).json()

    item = trace_of(body, 0)
    assert item["status"] == ("activated" if activated else "skipped")
    if activated:
        assert (item["matchedKey"], item["matchedText"]) == ("{{char}}-blade", "Sera-blade")
        assert item["matchedIn"]["source"] == "chat"


def test_a_chat_variable_in_a_key_comes_from_the_chat(api, user, character):
    book = book_of(user, {"key": ["{{getvar::place}}"], "content": "Found."})
    chat = chat_create(user=user, character_id=character.pk, lorebook_ids=[book.pk])
    Chat.objects.filter(pk=chat.pk).update(variables={"place": "mill"})
    ChatMessage.objects.create(chat=chat, role="user", name="x", swipes=["to the mill"])

    body = api.post(URL, {"chatId": chat.pk}, format="json").json()

    assert trace_of(body, 0)["matchedText"] == "mill"
    assert [e["content"] for e in body["activated"]] == ["Found."]
    assert Chat.objects.get(pk=chat.pk).variables == {"place": "mill"}  # nothing stored


# ------------------------------------------------------------------ the dry run equals the preview


@pytest.fixture
def model(db) -> AIModel:
    connection = Connection.objects.create(name="c", kind="openai", base_url="http://127.0.0.1:9")
    return AIModel.objects.create(
        model_id=settings.DEFAULT_MODEL_ID,
        connection=connection,
        upstream_model="up",
        context_tokens=8192,
        max_output_tokens=4096,
    )


def test_the_same_book_through_the_dry_run_and_the_roleplay_preview_gives_the_same_activation(
    api, user, character, persona, model
):
    book = book_of(
        user,
        {"key": ["{{char}}'s glade"], "content": "{{user}} enters {{char}}'s glade at {{isotime}}.", "order": 1},
        {"key": ["glade"], "content": "The glade feels {{getvar::mood}}.", "probability": 50, "order": 2},
        {"key": ["lost"], "content": "{{user}} needs a guide.", "matchPersonaDescription": True, "order": 3},
        {"key": ["river"], "content": "The river is cold.", "order": 4},  # found in the Author's Note
        {"key": ["guide"], "content": "R" * 6000, "order": 5},  # in entry 2's expanded content; over the budget
        {"key": ["forest"], "content": "Trees.", "characterFilter": {"isExclude": True, "names": ["Seraphina"]}},
    )
    chat = chat_create(
        user=user, character_id=character.pk, lorebook_ids=[book.pk], authors_note={"text": "The river hums."}
    )
    Chat.objects.filter(pk=chat.pk).update(variables={"mood": "calm"})
    ChatMessage.objects.create(
        chat=chat, role="user", name="Alexandria", swipes=["Where is Seraphina-of-the-Glade's glade?"]
    )

    preview = api.post(PREVIEW, {"chatId": chat.pk}, format="json")
    dry = api.post(URL, {"chatId": chat.pk, "maxContext": 8192 - 2048}, format="json")

    assert preview.status_code == dry.status_code == 200, (preview.json(), dry.json())
    preview_body, body = preview.json(), dry.json()
    assert body["trace"] == preview_body["trace"]
    assert body["budget"] == preview_body["worldInfoBudget"]
    assert body["seed"] == f"chat:{chat.pk}:2"  # the turn's seed: the greeting and the user's message
    sent = "\n".join(m["content"] for m in preview_body["messages"])
    for entry in body["activated"]:
        assert entry["content"] in sent
    # what the trace says, exactly
    rows = {t["uid"]: (t["status"], t["reason"], t["matchedText"], t["matchedIn"]) for t in body["trace"]}
    assert rows[0] == ("activated", "key_match", "Seraphina-of-the-Glade's glade", _where("chat", 0))
    assert rows[2] == ("activated", "key_match", "lost", _where("persona_description"))
    assert rows[3] == ("activated", "key_match", "river", _where("injection", 0))
    assert rows[4] == ("skipped", "budget", "guide", _where("recursion", lorebook=book.pk, uid=2))
    assert rows[5][:2] == ("skipped", "character_filter")
    assert [e["content"] for e in body["activated"] if e["uid"] == 0] == [
        "Alexandria enters Seraphina-of-the-Glade's glade at 15:45."
    ]
    big = trace_of(body, 4)
    assert (big["step"], big["tokens"]) == (2, estimate_tokens("R" * 6000 + "\n"))
    assert big["budgetTotal"] == body["budget"]["used"] + big["tokens"] >= body["budget"]["limit"]


def _where(source: str, index: int | None = None, *, lorebook: int | None = None, uid: int | None = None):
    return {"source": source, "index": index, "lorebookId": lorebook, "uid": uid}


# -------------------------------------------------------------------------------- request fields


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"charName": "A", "characterId": 1}, "charName"),
        ({"userName": "A", "personaId": 1}, "userName"),
        ({"chatId": 1, "characterId": 1}, "characterId"),
        ({"chatId": 1, "charName": "A"}, "charName"),
        ({"chatId": 1, "personaId": 1}, "personaId"),
        ({"chatId": 1, "userName": "A"}, "userName"),
        ({"userName": ""}, "userName"),
        ({"userName": "x" * 101}, "userName"),
        ({"characterId": 0}, "characterId"),
        ({"chatId": "one"}, "chatId"),
    ],
)
def test_conflicting_or_bad_context_fields_are_400(api, extra, field):
    response = api.post(URL, {"entries": [{"key": ["a"], "content": "b"}], **extra}, format="json")

    assert response.status_code == 400
    assert field in response.json()["details"]


def test_no_books_entries_or_chat_is_400(api):
    response = api.post(URL, {"userName": "A"}, format="json")

    assert response.status_code == 400
    assert response.json()["details"] == {"lorebookIds": ["请提供 lorebookIds、entries 或 chatId。"]}


def test_conflict_messages_name_both_fields(api):
    response = api.post(URL, {"chatId": 1, "charName": "A", "userName": "B"}, format="json")

    assert response.status_code == 400
    assert response.json()["details"] == {
        "charName": ["聊天已确定角色和人设：请不要提供 charName。"],
        "userName": ["聊天已确定角色和人设：请不要提供 userName。"],
    }
    english = api.post(
        URL, {"entries": [], "charName": "A", "characterId": 1}, format="json", HTTP_ACCEPT_LANGUAGE="en"
    )
    assert english.json()["details"] == {"charName": ["Give charName or characterId, not both."]}


@pytest.mark.parametrize("field", ["characterId", "personaId", "chatId"])
def test_someone_elses_character_persona_or_chat_is_404(make_client, user, other_user, character, field):
    theirs = {
        "characterId": lambda: character.pk,
        "personaId": lambda: persona_save(user=user, name="Mine").pk,
        "chatId": lambda: chat_create(user=user, character_id=character.pk).pk,
    }[field]()

    response = make_client(other_user).post(
        URL, {"entries": [{"key": ["a"], "content": "b"}], field: theirs}, format="json"
    )

    assert response.status_code == 404
    assert response.json()["statusCode"] == 404


def test_a_chat_alone_runs_its_own_world_info(api, user, character, persona):
    book = book_of(user, {"key": ["glade"], "content": "{{user}} sees the glade."})
    chat = chat_create(user=user, character_id=character.pk, lorebook_ids=[book.pk])
    ChatMessage.objects.create(chat=chat, role="user", name="x", swipes=["the glade"])

    body = api.post(URL, {"chatId": chat.pk}, format="json").json()

    assert [e["content"] for e in body["activated"]] == ["Alexandria sees the glade."]
    assert body["context"]["chatId"] == chat.pk and body["context"]["personaId"] == persona.pk


def test_the_dry_run_and_generation_read_the_same_clock(api, user, character, persona):
    book = book_of(user, {"constant": True, "content": "It is {{isotime}} on {{isodate}}."})
    chat = chat_create(user=user, character_id=character.pk, lorebook_ids=[book.pk])

    body = api.post(URL, {"chatId": chat.pk}, format="json").json()
    turn = plan(user, chat, limit=4000)

    assert [e["content"] for e in body["activated"]] == ["It is 15:45 on 2026-01-05."]
    assert [e.content for e in turn.activation.activated] == ["It is 15:45 on 2026-01-05."]
