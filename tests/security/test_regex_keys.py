"""Issue 20, item 1 against the live server (uvicorn → Django, real sockets): regex keys of lorebooks
cannot freeze the process.

The attack: a key /(a|a)*b/ over a chat of "aaa…a b". Before, one free dry run took 17.6 s and
/healthz waited 16.6 s meanwhile (the stdlib `re` backtracked 2**N times holding the GIL). Now an
inline key is refused at validation (400), a stored key times out (traced `regex_timeout`), the
activation's regex budget bounds the rest (`regex_budget`), and the engine releases the GIL while it
matches, so /healthz answers at once while a slow request runs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from apps.billing.services import wallet_grant
from apps.characters.services import character_create
from apps.novels.models import Novel
from apps.worldviews.engine.entry_schema import entry_coerce
from apps.worldviews.models import Lorebook, LorebookEntry
from tests.generation.conftest import _module_fake_upstream, fake_upstream, http, make_model, token  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = "/(a|a)*b/"
ATTACK = "a" * 40 + " b"  # 2**40 tries before the final "b" matches
LONG_CHAT = [{"name": "Alex", "role": "user", "content": ATTACK} for _ in range(50)]


def stored_book(user: Any, keys: list[str], **fields: Any) -> Lorebook:
    """A book written straight to the database, as one stored before the write-time checks existed."""
    book = Lorebook.objects.create(owner=user, name="old", **fields)
    LorebookEntry.objects.bulk_create(
        LorebookEntry(lorebook=book, uid=uid, data={"uid": uid, **entry_coerce({"key": [key], "content": f"c{uid}"})})
        for uid, key in enumerate(keys)
    )
    return book


def timed(call: Any) -> tuple[httpx.Response, float]:
    began = time.perf_counter()
    response = call()
    return response, time.perf_counter() - began


def test_dry_run_with_the_key_inline_is_refused_fast(http):  # noqa: F811
    response, elapsed = timed(
        lambda: http.post(
            "/api/v1/lorebooks/activate",
            json={"entries": [{"key": [SLOW], "content": "x"}], "chat": LONG_CHAT},
            headers={"Accept-Language": "en"},
        )
    )
    assert response.status_code == 400
    [message] = response.json()["details"]["entries.0.key"]
    assert message.startswith("Regex key /(a|a)*b/ is refused: it takes over 50 ms")
    assert elapsed < 4.0


def test_dry_run_over_a_stored_key_is_bounded_and_traced(http, user):  # noqa: F811
    book = stored_book(user, [SLOW, "/dragons?/"])
    body = {"lorebookIds": [book.pk], "chat": [*LONG_CHAT, {"name": "Alex", "content": "dragons"}]}
    response, elapsed = timed(lambda: http.post("/api/v1/lorebooks/activate", json=body))
    assert response.status_code == 200
    trace = {t["uid"]: t for t in response.json()["trace"]}
    assert trace[0]["reason"] == "regex_timeout" and "timed out after 50 ms" in trace[0]["detail"]
    assert trace[1]["status"] == "activated"  # the other keys still work
    assert elapsed < 4.0


def test_healthz_answers_while_a_slow_regex_request_runs(http, user, settings):  # noqa: F811
    """100 distinct slow keys and a 2 s regex budget: the dry run takes ~2 s, and /healthz, polled
    all along, answers each time in under 100 ms (the live server runs in this process, so the
    settings apply to it)."""
    settings.WORLDINFO_REGEX_BUDGET = 2.0
    book = stored_book(user, [f"/(a|a)*b|z{i}/" for i in range(100)])
    result: dict[str, Any] = {}

    def slow_request() -> None:
        result["response"], result["elapsed"] = timed(
            lambda: http.post("/api/v1/lorebooks/activate", json={"lorebookIds": [book.pk], "chat": LONG_CHAT})
        )

    thread = threading.Thread(target=slow_request)
    latencies = []
    with httpx.Client(base_url=str(http.base_url), timeout=10) as probe:
        probe.get("/healthz")  # connected before the slow request starts
        thread.start()
        time.sleep(0.2)  # the request is in the regex loop
        while thread.is_alive() and len(latencies) < 500:
            response, elapsed = timed(lambda: probe.get("/healthz"))
            assert response.status_code == 200
            latencies.append(elapsed)
            time.sleep(0.02)
    thread.join(10)
    assert result["response"].status_code == 200
    reasons = {t["reason"] for t in result["response"].json()["trace"]}
    assert reasons == {"regex_timeout", "regex_budget"}
    assert 1.5 < result["elapsed"] < 4.0  # slow indeed, but bounded by the budget
    assert len(latencies) >= 20
    assert max(latencies) < 0.1, sorted(latencies)[-5:]


CARD: dict[str, Any] = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {"name": "Seraphina", "description": "{{char}} guards the forest.", "first_mes": "Awake!"},
}


def test_a_roleplay_turn_with_a_stored_slow_key_completes_in_bounded_time(
    http,  # noqa: F811
    user,
    make_model,  # noqa: F811
    fake_upstream,  # noqa: F811
):
    wallet_grant(user=user, amount=100_000)
    make_model(context_tokens=8192, max_output_tokens=1024)
    character = character_create(user=user, novel_id=Novel.objects.create(owner=user, title="n").pk, card=CARD)
    chat = http.post("/api/v1/chats", json={"characterId": character.pk}).json()
    book = stored_book(user, [SLOW, "/\\bforest\\b/"])
    assert http.patch(f"/api/v1/chats/{chat['id']}", json={"lorebookIds": [book.pk]}).status_code == 200
    body = {"chatId": chat["id"], "maxTokens": 64, "userInput": ATTACK + " in the forest"}
    preview = http.post("/api/v1/generation/roleplay/preview", json=body).json()
    trace = {t["uid"]: t for t in preview["trace"]}
    assert trace[0]["reason"] == "regex_timeout" and trace[1]["status"] == "activated"
    for _turn in range(3):  # every turn repeats the activation: each stays bounded
        response, elapsed = timed(lambda: http.post("/api/v1/generation/roleplay", json=body))
        assert response.status_code == 200, response.text
        assert elapsed < 6.0


def test_a_roleplay_turn_uses_the_settings_regex_limits_of_the_moment(
    http,  # noqa: F811
    user,
    make_model,  # noqa: F811
    settings,
):
    """The roleplay turn passes the current settings to the engine (not a default fixed at start-up):
    a budget below the per-search timeout cuts the slow key's search and leaves no time for the ordinary
    key after it (with the default budget the first is a timeout and the second activates)."""
    make_model(context_tokens=8192, max_output_tokens=1024)
    character = character_create(user=user, novel_id=Novel.objects.create(owner=user, title="n").pk, card=CARD)
    chat = http.post("/api/v1/chats", json={"characterId": character.pk}).json()
    book = stored_book(user, [SLOW, "/\\bforest\\b/"])
    assert http.patch(f"/api/v1/chats/{chat['id']}", json={"lorebookIds": [book.pk]}).status_code == 200
    body = {"chatId": chat["id"], "maxTokens": 64, "userInput": ATTACK + " in the forest"}
    settings.WORLDINFO_REGEX_BUDGET = 0.01
    trace = {t["uid"]: t for t in http.post("/api/v1/generation/roleplay/preview", json=body).json()["trace"]}
    assert trace[0]["reason"] == "regex_budget" and trace[1]["reason"] == "regex_budget"
