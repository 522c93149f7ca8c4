"""Regex keys refused at write time with a 400 naming the entry field and the key: lorebook
create/update/import, entry create/update, the dry run's inline entries, and cards with an embedded
book (character create/update/import). Stored books with such keys still work (they time out)."""

from __future__ import annotations

import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.cards import export_card_png, minimal_png, normalize_card_v3
from apps.characters.models import Character
from apps.novels.models import Novel
from apps.worldviews.engine.entry_schema import entry_coerce
from apps.worldviews.models import Lorebook, LorebookEntry

pytestmark = pytest.mark.django_db

URL = "/api/v1/lorebooks"
SLOW = "/(a|a)*b/"
REFUSED = f"Regex key {SLOW} is refused: it takes over 50 ms on a "


@pytest.fixture
def en(make_client, user):
    return make_client(user, language="en")


def upload(name: str, content: bytes, content_type: str = "application/json") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def refused(response, path, start=REFUSED):
    assert response.status_code == 400, response.content
    body = response.json()
    [message] = body["details"][path]
    assert message.startswith(start), message
    return body["details"]


def test_lorebook_create_and_update_refuse_the_key_and_store_nothing(en):
    started = time.perf_counter()
    response = en.post(
        URL, {"name": "b", "entries": [{"key": ["dragon"]}, {"key": ["ok", SLOW], "content": "x"}]}, format="json"
    )
    details = refused(response, "entries.1.key")
    assert details["entries.1.key"][0].endswith("-character test text (catastrophic backtracking).")
    assert time.perf_counter() - started < 4
    assert not Lorebook.objects.exists()
    book = en.post(URL, {"name": "b", "entries": [{"key": ["dragon"]}]}, format="json").json()
    for method in (en.put, en.patch):
        response = method(f"{URL}/{book['id']}", {"name": "b", "entries": [{"keysecondary": [SLOW]}]}, format="json")
        refused(response, "entries.0.keysecondary")
    assert [e.data["key"] for e in LorebookEntry.objects.all()] == [["dragon"]]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("/[x/", "it is not a valid regular expression (unterminated character class)"),
        ("/(?P<n>a)/", "it is not a valid regular expression (unsupported group syntax (not JavaScript))"),
        ("/x/ii", "a flag is repeated"),
        ("/(\\w+\\s?)+$/", "a repeated group contains another repetition, as in (a+)+ (catastrophic backtracking)"),
        ("/(?:a{1000}){1000}/", "its repetition counts expand to over 5000 items"),
    ],
)
def test_what_the_engine_cannot_run_is_refused(en, key, reason):
    book = en.post(URL, {"name": "b"}, format="json").json()
    response = en.post(f"{URL}/{book['id']}/entries", {"key": [key]}, format="json")
    assert response.status_code == 400
    assert response.json()["details"] == {"key": [f"Regex key {key} is refused: {reason}."]}


def test_ordinary_regex_keys_are_stored(en):
    keys = ["/\\bdragon(s)?\\b/i", "/(?:red|blue) moon/", "/\\x01{{user}}:[^\\x01]*?hello/", "/\\p{Script=Han}+/u"]
    response = en.post(URL, {"name": "b", "entries": [{"key": keys}]}, format="json")
    assert response.status_code == 201
    assert response.json()["entries"][0]["key"] == keys


def test_entry_create_patch_and_decorator_keys(en, user):
    book = en.post(URL, {"name": "b"}, format="json").json()
    entries = f"{URL}/{book['id']}/entries"
    refused(en.post(entries, {"key": [SLOW]}, format="json"), "key")
    refused(en.post(entries, {"key": ["x"], "content": f"@@exclude_keys {SLOW}\nlore"}, format="json"), "content")
    entry = en.post(entries, {"key": ["dragon"]}, format="json").json()
    refused(en.patch(f"{entries}/{entry['uid']}", {"keysecondary": [SLOW]}, format="json"), "keysecondary")
    refused(en.put(f"{entries}/{entry['uid']}", {"key": [SLOW]}, format="json"), "key")
    # a key stored before these checks existed does not block an unrelated PATCH
    LorebookEntry.objects.filter(lorebook_id=book["id"]).update(data={"uid": entry["uid"], "key": [SLOW]})
    Lorebook.objects.filter(pk=book["id"]).update(name="touched")
    response = en.patch(f"{entries}/{entry['uid']}", {"comment": "still fine"}, format="json")
    assert response.status_code == 200 and response.json()["key"] == [SLOW]


def test_import_refuses_the_file(en):
    world = {"entries": {"0": {"uid": 0, "key": ["dragon"]}, "5": {"uid": 5, "key": ["x"], "keysecondary": [SLOW]}}}
    response = en.post(f"{URL}/import", {"file": upload("w.json", json.dumps(world).encode())}, format="multipart")
    refused(response, "entries.1.keysecondary")
    assert not Lorebook.objects.exists()


def card_with_book(keys):
    return normalize_card_v3(
        {"name": "悟空", "character_book": {"entries": [{"keys": ["ok"]}, {"keys": keys, "content": "lore"}]}}
    )


def test_lorebook_import_of_a_card_refuses_its_book(en):
    png = export_card_png(card_with_book([SLOW]), None, minimal_png())
    response = en.post(f"{URL}/import", {"file": upload("c.png", png, "image/png")}, format="multipart")
    refused(response, "entries.1.key")


def test_cards_with_such_a_book_are_refused(en, user):
    card = card_with_book(["fine", SLOW])
    png = export_card_png(card, None, minimal_png())
    response = en.post("/api/v1/characters/import", {"file": upload("c.png", png, "image/png")}, format="multipart")
    refused(response, "data.character_book.entries.1.keys")
    novel = Novel.objects.create(owner=user, title="n")
    response = en.post("/api/v1/characters", {"novelId": novel.pk, "card": card}, format="json")
    refused(response, "card.data.character_book.entries.1.keys")
    assert not Character.objects.exists()
    created = en.post("/api/v1/characters", {"novelId": novel.pk, "card": card_with_book(["fine"])}, format="json")
    assert created.status_code == 201
    secondary = card_with_book(["fine"])
    secondary["data"]["character_book"]["entries"][1]["secondary_keys"] = [SLOW]
    response = en.patch(f"/api/v1/characters/{created.json()['id']}", {"card": secondary}, format="json")
    refused(response, "card.data.character_book.entries.1.secondary_keys")
    # renaming a character does not re-check its card
    assert en.patch(f"/api/v1/characters/{created.json()['id']}", {"name": "八戒"}, format="json").status_code == 200


def test_dry_run_refuses_inline_entries_but_bounds_stored_ones(en, user):
    chat = [{"name": "U", "content": "a" * 40 + " b"}]
    response = en.post(f"{URL}/activate", {"entries": [{"key": [SLOW], "content": "x"}], "chat": chat}, format="json")
    refused(response, "entries.0.key")
    book = Lorebook.objects.create(owner=user, name="old")  # stored before the checks: bypasses them
    LorebookEntry.objects.create(lorebook=book, uid=0, data={"uid": 0, **entry_coerce({"key": [SLOW], "content": "x"})})
    started = time.perf_counter()
    response = en.post(f"{URL}/activate", {"lorebookIds": [book.pk], "chat": chat}, format="json")
    assert response.status_code == 200
    assert time.perf_counter() - started < 4
    [item] = response.json()["trace"]
    assert item["status"] == "skipped" and item["reason"] == "regex_timeout"
    assert "key '/(a|a)*b/' timed out after 50 ms" in item["detail"]


def test_messages_are_translated(make_client, user):
    zh = make_client(user, language="zh-hans")
    response = zh.post(URL, {"name": "b", "entries": [{"key": ["/[x/"]}]}, format="json")
    assert response.status_code == 400 and "/[x/" in response.json()["details"]["entries.0.key"][0]
