"""The playground in chromium, roleplay mode: a card PNG imported, a chat started, a turn streamed,
regenerate and a new swipe, and the lorebook trace of the next turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apps.cards import export_card_png, minimal_png, parse_card_json
from apps.characters.models import Character
from apps.generation.models import ChatMessage
from tests.fakes.upstream import Reply
from tests.playground.conftest import sign_in_with_token

pytestmark = pytest.mark.django_db(transaction=True)

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Aria",
        "description": "A cartographer who maps the floating islands.",
        "personality": "curious, precise",
        "scenario": "The airship docks at Skyreach.",
        "first_mes": "Welcome aboard, {{user}}. Where shall we chart today?",
        "mes_example": "",
        "character_book": {
            "name": "Skyreach",
            "entries": [
                {
                    "keys": ["dragon"],
                    "content": "Dragons nest on the eastern cliffs of Skyreach.",
                    "enabled": True,
                    "insertion_order": 10,
                    "comment": "Dragons",
                    "id": 1,
                },
                {
                    "keys": ["treasure"],
                    "content": "The treasure is a myth.",
                    "enabled": True,
                    "insertion_order": 20,
                    "comment": "Treasure",
                    "id": 2,
                },
            ],
        },
    },
}


@pytest.fixture
def card_png(tmp_path: Path) -> Path:
    path = tmp_path / "aria.png"
    path.write_bytes(export_card_png(parse_card_json(CARD).card_v3, CARD, minimal_png(64, 64, (64, 110, 220, 255))))
    return path


def bubbles(page: Any) -> list[str]:
    return page.get_by_test_id("chat").locator("li .msg-body").all_inner_texts()


def test_import_a_card_chat_regenerate_swipe_and_see_the_lorebook_trace(
    playground, fake_upstream, make_model, token, card_png, desktop_and_phone
):
    make_model()
    page = playground()
    sign_in_with_token(page, token)
    page.get_by_role("tab", name="Roleplay").click()

    # import the PNG card: it becomes the selected character, its avatar shown
    page.get_by_test_id("card-file").set_input_files(str(card_png))
    page.wait_for_function(
        "() => document.querySelector('[data-testid=character-select]').selectedOptions[0]?.text === 'Aria'"
    )
    assert Character.objects.get().name == "Aria"
    page.locator("#character .avatar img").wait_for()

    # start a chat: the card's greeting, macros expanded
    page.get_by_test_id("start-chat").click()
    page.get_by_test_id("chat").locator("li").first.wait_for()
    assert bubbles(page) == ["Welcome aboard, alice. Where shall we chart today?"]

    # the trace of the next turn: the dragon entry activates on the typed input, the treasure one does not
    page.get_by_test_id("rp-input").fill("Tell me about the dragon.")
    page.get_by_test_id("trace-button").click()
    trace = page.get_by_test_id("trace")
    trace.locator("tr.activated").first.wait_for()
    assert "Dragons" in trace.locator("tr.activated").inner_text()
    assert "Treasure" in trace.locator("tr.skipped").inner_text()

    # send: the reply streams into the chat, and it reached the model with the lorebook entry
    fake_upstream.script(Reply(chunks=["The dragons ", "sleep by day."], chunk_delay=0.1))
    page.get_by_test_id("send").click()
    page.get_by_test_id("rp-consumption").wait_for()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=chat] li').length === 3")
    assert bubbles(page)[1:] == ["Tell me about the dragon.", "The dragons sleep by day."]
    sent = "\n".join(m["content"] for m in fake_upstream.completion_requests[-1].json["messages"])
    assert "Dragons nest on the eastern cliffs" in sent and "treasure is a myth" not in sent
    assert page.get_by_test_id("rp-input").input_value() == ""

    # regenerate replaces the reply; a new swipe adds one, paged with ‹ ›
    fake_upstream.script(Reply(chunks=["They hoard maps."]))
    page.get_by_test_id("regenerate").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=chat] li .msg-body')].at(-1).textContent"
        " === 'They hoard maps.'"
    )
    fake_upstream.script(Reply(chunks=["They fear the wind."]))
    page.get_by_test_id("swipe").click()
    position = page.get_by_test_id("swipe-position")
    page.wait_for_function("() => document.querySelector('[data-testid=swipe-position]')?.textContent.endsWith('/ 3')")
    assert bubbles(page)[-1] == "They fear the wind." and position.inner_text() == "3 / 3"
    reply = ChatMessage.objects.filter(role="assistant").order_by("pk").last()
    assert reply is not None and reply.swipes == [
        "The dragons sleep by day.",
        "They hoard maps.",
        "They fear the wind.",
    ]
    page.get_by_test_id("chat").get_by_role("button", name="‹").click()
    page.wait_for_function("() => document.querySelector('[data-testid=swipe-position]')?.textContent === '2 / 3'")
    assert bubbles(page)[-1] == "They hoard maps."
    desktop_and_phone(page, "playground-roleplay")
