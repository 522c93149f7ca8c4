"""Dry run of world-info activation over REST (`POST /api/v1/lorebooks/activate`)."""

from __future__ import annotations

import pytest

from apps.worldviews.engine.entry_schema import entry_coerce
from apps.worldviews.models import Lorebook, LorebookEntry

pytestmark = pytest.mark.django_db

URL = "/api/v1/lorebooks/activate"

ENTRIES = [
    {"uid": 0, "key": ["dragon"], "content": "Dragons breathe fire.", "order": 10, "comment": "龙"},
    {"uid": 1, "key": ["castle"], "keysecondary": ["red"], "content": "The castle.", "order": 20},
    {"uid": 2, "constant": True, "content": "Always.", "order": 5, "position": 1},
    {"uid": 3, "key": ["dragon"], "disable": True, "content": "x"},
    {"uid": 4, "key": ["fire"], "content": "Fire burns.", "position": 4, "depth": 2, "role": 1, "order": 30},
    {"uid": 6, "key": ["dragon"], "content": "out", "position": 7, "outletName": "lore"},
]
CHAT = [{"name": "Alice", "role": "user", "content": "I see a dragon in the castle"}]


def make_book(owner, entries=ENTRIES, **kwargs):
    book = Lorebook.objects.create(owner=owner, name="b", **kwargs)
    LorebookEntry.objects.bulk_create(
        [LorebookEntry(lorebook=book, uid=e["uid"], data={"uid": e["uid"], **entry_coerce(e)}) for e in entries]
    )
    return book


def statuses(body):
    return {(t["lorebookId"], t["uid"]): (t["status"], t["reason"]) for t in body["trace"]}


def test_dry_run_against_stored_lorebook(api, user):
    book = make_book(user)
    response = api.post(URL, {"lorebookIds": [book.pk], "chat": CHAT, "maxContext": 1000, "seed": 1}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert statuses(body) == {
        (book.pk, 0): ("activated", "key_match"),
        (book.pk, 1): ("skipped", "secondary_logic"),
        (book.pk, 2): ("activated", "constant"),
        (book.pk, 3): ("skipped", "disabled"),
        (book.pk, 4): ("activated", "key_match"),  # recursion: "fire" is in entry 0's content
        (book.pk, 6): ("activated", "key_match"),
    }
    assert body["activated"] == [
        {
            "lorebookId": book.pk,
            "uid": 2,
            "comment": "",
            "position": 1,
            "depth": 4,
            "role": 0,
            "order": 5,
            "content": "Always.",
        },
        {
            "lorebookId": book.pk,
            "uid": 0,
            "comment": "龙",
            "position": 0,
            "depth": 4,
            "role": 0,
            "order": 10,
            "content": "Dragons breathe fire.",
        },
        {
            "lorebookId": book.pk,
            "uid": 4,
            "comment": "",
            "position": 4,
            "depth": 2,
            "role": 1,
            "order": 30,
            "content": "Fire burns.",
        },
        {
            "lorebookId": book.pk,
            "uid": 6,
            "comment": "",
            "position": 7,
            "depth": 4,
            "role": 0,
            "order": 100,
            "content": "out",
        },
    ]
    assert body["byPosition"] == {
        "before": "Dragons breathe fire.",
        "after": "Always.",
        "ANTop": "",
        "ANBottom": "",
        "atDepth": "Fire burns.",
        "EMTop": "",
        "EMBottom": "",
        "outlet": "out",
    }
    assert body["depthInjections"] == [{"depth": 2, "role": "user", "content": "Fire burns."}]
    assert body["outlets"] == {"lore": "out"}
    assert body["budget"] == {"limit": 250, "used": 14, "overflowed": False}
    assert body["seed"] == 1
    trace_item = next(t for t in body["trace"] if t["uid"] == 1)
    assert trace_item["detail"] == "key 'castle' matched; AND_ANY: no secondary key matched"


def test_settings_change_the_outcome(api, user):
    book = make_book(user)
    body = api.post(
        URL,
        {"lorebookIds": [book.pk], "chat": CHAT, "settings": {"recursive": False, "budgetCap": 3}, "seed": 0},
        format="json",
    ).json()
    assert body["budget"]["limit"] == 3
    outcome = statuses(body)
    assert outcome[(book.pk, 4)] == ("skipped", "no_key_match")  # no recursion: "fire" never scanned
    assert [a["uid"] for a in body["activated"]] == [6]  # highest order first: only "out" fits 3 tokens
    assert outcome[(book.pk, 0)] == ("skipped", "budget") and outcome[(book.pk, 2)] == ("skipped", "budget")
    assert body["budget"] == {"limit": 3, "used": 2, "overflowed": True}


def test_scan_depth_zero_scans_nothing(api, user):
    book = make_book(user)
    body = api.post(URL, {"lorebookIds": [book.pk], "chat": CHAT, "settings": {"scanDepth": 0}}, format="json").json()
    assert [a["uid"] for a in body["activated"]] == [2]


def test_inline_entries(api):
    body = api.post(
        URL,
        {
            "entries": [{"key": ["龙"], "content": "龙是神兽。"}, {"key": ["虎"], "content": "虎。"}],
            "chat": [{"name": "悟空", "content": "我看见一条龙"}],
            "seed": 3,
        },
        format="json",
    ).json()
    assert body["activated"] == [
        {
            "lorebookId": None,
            "uid": 0,
            "comment": "",
            "position": 0,
            "depth": 4,
            "role": 0,
            "order": 100,
            "content": "龙是神兽。",
        }
    ]
    assert statuses(body) == {(None, 0): ("activated", "key_match"), (None, 1): ("skipped", "no_key_match")}


def test_inline_entries_are_validated(make_client, user):
    response = make_client(user, language="en").post(
        URL, {"entries": [{"key": ["a"]}, {"key": "b", "probability": 200}]}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["statusCode"] == 400 and body["error"] == "Bad Request"
    assert body["details"] == {
        "entries.1.key": ["Must be a list of strings."],
        "entries.1.probability": ["Must be between 0 and 100."],
    }


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "lorebookIds"),
        ({"entries": [], "settings": {"scanDepth": -1}}, "settings.scanDepth"),
        ({"entries": [], "generationType": "dance"}, "generationType"),
        ({"entries": [], "chat": [{"role": "narrator", "content": "x"}]}, "chat.0.role"),
        ({"entries": [], "maxContext": 0}, "maxContext"),
    ],
)
def test_request_validation(api, payload, field):
    response = api.post(URL, payload, format="json")
    assert response.status_code == 400 and field in response.json()["details"]


def test_other_users_lorebook_is_404(make_client, user, other_user):
    mine = make_book(user)
    theirs = make_book(other_user)
    client = make_client(user, language="en")
    for ids in ([theirs.pk], [mine.pk, theirs.pk], [999_999]):
        response = client.post(URL, {"lorebookIds": ids, "chat": CHAT}, format="json")
        assert response.status_code == 404
        assert response.json()["message"] == f"Lorebook {ids[-1]} does not exist."


def test_seed_makes_probability_deterministic(api, user):
    book = make_book(user, [{"uid": 0, "key": ["dragon"], "content": "maybe", "probability": 50}])
    outcomes = {}
    for seed in range(12):
        runs = [
            api.post(URL, {"lorebookIds": [book.pk], "chat": CHAT, "seed": seed}, format="json").json()
            for _ in range(2)
        ]
        assert runs[0] == runs[1]
        outcomes[seed] = runs[0]["trace"][0]["status"]
    assert set(outcomes.values()) == {"activated", "skipped"}
    reasons = {
        api.post(URL, {"lorebookIds": [book.pk], "chat": CHAT, "seed": s}, format="json").json()["trace"][0]["reason"]
        for s, status in outcomes.items()
        if status == "skipped"
    }
    assert reasons == {"probability"}
    unseeded = api.post(URL, {"lorebookIds": [book.pk], "chat": CHAT}, format="json").json()
    assert isinstance(unseeded["seed"], int)
    replay = api.post(URL, {"lorebookIds": [book.pk], "chat": CHAT, "seed": unseeded["seed"]}, format="json").json()
    assert replay == unseeded


def test_character_linked_books_come_first(api, user):
    from apps.characters.models import Character
    from apps.novels.models import Novel

    character = Character.objects.create(novel=Novel.objects.create(owner=user, title="n"), name="c")
    glob = make_book(user, [{"uid": 0, "constant": True, "content": "G", "order": 100}], is_global=True)
    char = make_book(user, [{"uid": 0, "constant": True, "content": "C", "order": 1}], character=character)
    body = api.post(URL, {"lorebookIds": [glob.pk, char.pk]}, format="json").json()
    assert [t["lorebookId"] for t in body["trace"]] == [char.pk, glob.pk]  # character_first
    assert body["byPosition"]["before"] == "C\nG"


def test_dry_run_writes_nothing(api, user):
    book = make_book(user)
    before = list(LorebookEntry.objects.order_by("pk").values_list("data", flat=True))
    api.post(URL, {"lorebookIds": [book.pk], "chat": CHAT}, format="json")
    assert list(LorebookEntry.objects.order_by("pk").values_list("data", flat=True)) == before


def test_entry_edits_are_seen_by_the_next_dry_run(api, user):
    book = make_book(user, [{"uid": 0, "key": ["dragon"], "content": "old"}])
    payload = {"lorebookIds": [book.pk], "chat": CHAT, "seed": 0}
    assert api.post(URL, payload, format="json").json()["byPosition"]["before"] == "old"
    api.patch(f"/api/v1/lorebooks/{book.pk}/entries/0", {"content": "new"}, format="json")
    assert api.post(URL, payload, format="json").json()["byPosition"]["before"] == "new"
    api.post(
        f"/api/v1/lorebooks/{book.pk}/entries",
        {"uid": 1, "key": ["castle"], "content": "more", "order": 200},
        format="json",
    )
    assert api.post(URL, payload, format="json").json()["byPosition"]["before"] == "new\nmore"
    api.delete(f"/api/v1/lorebooks/{book.pk}/entries/0")
    assert api.post(URL, payload, format="json").json()["byPosition"]["before"] == "more"
    api.put(f"/api/v1/lorebooks/{book.pk}", {"name": "b", "entries": []}, format="json")
    assert api.post(URL, payload, format="json").json()["activated"] == []


def test_hidden_and_system_lines_are_not_scanned(api):
    entries = [{"key": ["龙"], "content": "龙。"}]
    for line in ({"role": "system", "content": "龙"}, {"role": "user", "content": "龙", "hidden": True}):
        body = api.post(URL, {"entries": entries, "chat": [line]}, format="json").json()
        assert body["activated"] == [] and body["trace"][0]["reason"] == "no_key_match"
    body = api.post(URL, {"entries": entries, "chat": [{"role": "assistant", "content": "龙"}]}, format="json").json()
    assert [a["content"] for a in body["activated"]] == ["龙。"]
