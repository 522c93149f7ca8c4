"""Issue 20, item 7: chat and global variable stores are capped.

Before: a card whose greetings write `{{setglobalvar}}` grew the user's global variables without bound
through free chat creation — here 21 `POST chats` left an 84 MB row and took 20 s, the last chat
1.7 s (the issue: 68 MB, 4.5 s per chat). Now the stores are `CappedStore`s: at most
`MACRO_VARIABLES_MAX_CHARS` (200,000) characters of JSON and `MACRO_VARIABLES_MAX_KEYS` (1,000) keys;
a write past a cap is refused (the variable keeps its value), so a row cannot grow past the cap; the
chat API refuses `variables` over the caps with a 400.
"""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from apps.billing.services import wallet_grant
from apps.characters.services import character_create
from apps.generation.models import Chat, GlobalVariables
from apps.novels.models import Novel
from apps.providers.models import AIModel, Connection
from tests.security.bounds import measure

pytestmark = pytest.mark.django_db(transaction=True)

CAP = 200_000


@pytest.fixture
def http(live_server_url, user):
    from apps.accounts.services import token_create

    headers = {"Authorization": f"Bearer {token_create(user=user).token}", "Accept-Language": "en"}
    with httpx.Client(base_url=live_server_url, headers=headers, timeout=60) as client:
        yield client


def character(user, *greetings: str):
    novel = Novel.objects.create(owner=user, title="n")
    data = {"name": "V", "first_mes": greetings[0], "alternate_greetings": list(greetings[1:])}
    return character_create(
        user=user, novel_id=novel.pk, card={"spec": "chara_card_v2", "spec_version": "2.0", "data": data}
    )


def global_row_chars(user) -> int:
    row = GlobalVariables.objects.filter(user=user).first()
    return len(json.dumps(row.variables, ensure_ascii=False)) if row else 0


def test_the_issues_chat_creation_attack_no_longer_grows_the_row(http, user):
    """Each greeting writes a new megabyte-sized global: over the request's macro budget, so refused."""
    greet = "{{setglobalvar::k{{incglobalvar::n}}::{{space::999999}}}}"
    card = character(user, greet, greet, greet, greet)
    with measure() as cost:
        statuses = [http.post("/api/v1/chats", json={"characterId": card.pk}).status_code for _ in range(21)]
    assert statuses == [400] * 21
    assert global_row_chars(user) == 0 and not Chat.objects.exists()
    assert cost.seconds < 9 and cost.rss_peak_mib < 64, cost


def test_writes_within_the_budget_stop_at_the_cap(http, user):
    """100,000 characters per chat fit the macro budget (the output and the write count: 200,000 of the
    floor's 250,000); the second such global no longer fits the store."""
    card = character(user, "{{setglobalvar::k{{incglobalvar::n}}::{{space::100000}}}}Hello")
    timings = []
    for _ in range(21):
        with measure() as cost:
            response = http.post("/api/v1/chats", json={"characterId": card.pk})
        assert response.status_code == 201, response.text
        timings.append(cost.seconds)
    variables = GlobalVariables.objects.get(user=user).variables
    assert set(variables) == {"n", "k1"} and variables["n"] == 21
    assert global_row_chars(user) <= CAP
    assert max(timings) < 0.5, timings
    first = http.get(f"/api/v1/chats/{Chat.objects.order_by('id').first().pk}/messages").json()["items"][0]
    assert first["content"] == "Hello"


def test_the_key_cap(http, user, settings):
    settings.MACRO_VARIABLES_MAX_KEYS = 50
    greeting = "".join(f"{{{{setglobalvar::g{i}::x}}}}" for i in range(200)) + "Hi"
    response = http.post("/api/v1/chats", json={"characterId": character(user, greeting).pk})
    assert response.status_code == 201
    assert len(GlobalVariables.objects.get(user=user).variables) == 50


def test_the_chat_api_refuses_variables_over_the_caps(http, user, settings):
    chat = http.post("/api/v1/chats", json={"characterId": character(user, "Hi").pk}).json()
    too_big = http.patch(f"/api/v1/chats/{chat['id']}", json={"variables": {"a": "x" * CAP}})
    assert too_big.status_code == 400
    assert too_big.json()["details"]["variables"] == [
        "Variables may take at most 200000 characters (as JSON) and 1000 keys."
    ]
    settings.MACRO_VARIABLES_MAX_KEYS = 3
    too_many = http.patch(f"/api/v1/chats/{chat['id']}", json={"variables": {"a": 1, "b": 2, "c": 3, "d": 4}})
    assert too_many.status_code == 400
    fine = http.patch(f"/api/v1/chats/{chat['id']}", json={"variables": {"a": 1, "b": [1, 2]}})
    assert fine.status_code == 200 and fine.json()["variables"] == {"a": 1, "b": [1, 2]}


@pytest.fixture(scope="module")
def _upstream():
    from tests.fakes.upstream import FakeUpstream

    server = FakeUpstream().start()
    try:
        yield server
    finally:
        server.stop()


def test_a_roleplay_turn_cannot_grow_the_chat_past_the_cap(http, user, _upstream):
    _upstream.reset()
    connection = Connection.objects.create(name="fake", kind="openai", base_url=_upstream.base_url, read_timeout=5)
    connection.set_api_key("sk-test")
    connection.save()
    AIModel.objects.create(
        model_id="m",
        connection=connection,
        upstream_model="up",
        context_tokens=65536,  # a macro budget of 1 M characters: the store's cap is what stops `b`
        max_output_tokens=1024,
        input_ratio=Decimal(1),
        output_ratio=Decimal(1),
    )
    wallet_grant(user=user, amount=10_000_000)
    chat = http.post("/api/v1/chats", json={"characterId": character(user, "Hi").pk}).json()
    user_input = "{{setvar::a::{{space::150000}}}}{{setvar::b::{{space::90000}}}}{{setvar::c::small}}Go"
    response = http.post(
        "/api/v1/generation/roleplay", json={"chatId": chat["id"], "modelId": "m", "userInput": user_input}
    )
    assert response.status_code == 200, response.text
    variables = Chat.objects.get(pk=chat["id"]).variables
    assert set(variables) == {"a", "c"}  # b would have passed the cap; c still fits
    assert len(json.dumps(variables)) <= CAP


def test_a_list_grown_in_place_is_saved(http, user):
    """The store's own `changed` flag, not a comparison with a shallow copy that shares the list."""
    GlobalVariables.objects.create(user=user, variables={"log": ["a"]})
    response = http.post("/api/v1/chats", json={"characterId": character(user, "{{addglobalvar::log::b}}Hi").pk})
    assert response.status_code == 201
    assert GlobalVariables.objects.get(user=user).variables == {"log": ["a", "b"]}
