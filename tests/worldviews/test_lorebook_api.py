"""Lorebooks over REST: CRUD with SillyTavern entry fields, validation, isolation, import and export."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.cards import export_card_png, minimal_png, normalize_card_v3
from apps.characters.models import Character
from apps.novels.models import Novel
from apps.worldviews.engine.entry_schema import entry_defaults
from apps.worldviews.models import Lorebook, LorebookEntry

pytestmark = pytest.mark.django_db

URL = "/api/v1/lorebooks"

# SillyTavern 1.15 newWorldInfoEntryDefinition defaults (reference §2.3), uid aside.
ST_DEFAULTS = {
    "key": [],
    "keysecondary": [],
    "comment": "",
    "content": "",
    "constant": False,
    "vectorized": False,
    "selective": True,
    "selectiveLogic": 0,
    "addMemo": False,
    "order": 100,
    "position": 0,
    "disable": False,
    "ignoreBudget": False,
    "excludeRecursion": False,
    "preventRecursion": False,
    "delayUntilRecursion": 0,
    "matchPersonaDescription": False,
    "matchCharacterDescription": False,
    "matchCharacterPersonality": False,
    "matchCharacterDepthPrompt": False,
    "matchScenario": False,
    "matchCreatorNotes": False,
    "probability": 100,
    "useProbability": True,
    "depth": 4,
    "outletName": "",
    "group": "",
    "groupOverride": False,
    "groupWeight": 100,
    "scanDepth": None,
    "caseSensitive": None,
    "matchWholeWords": None,
    "useGroupScoring": None,
    "automationId": "",
    "role": 0,
    "sticky": None,
    "cooldown": None,
    "delay": None,
    "triggers": [],
    "displayIndex": None,
}


def upload(name: str, content: bytes, content_type: str = "application/json") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


@pytest.fixture
def en(make_client, user):
    return make_client(user, language="en")


def test_defaults_are_sillytavern_defaults():
    assert entry_defaults() == ST_DEFAULTS


def test_create_with_entries_then_read(api):
    body = {
        "name": "西游设定",
        "description": "取经路上",
        "isGlobal": True,
        "entries": [
            {"key": ["金箍棒"], "content": "重一万三千五百斤。", "order": 50, "自定义": {"a": 1}},
            {"uid": 7, "key": ["花果山"], "content": "美猴王的家。", "position": 4, "depth": 2, "role": 1},
        ],
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 201
    created = response.json()
    assert created["name"] == "西游设定" and created["isGlobal"] is True and created["characterId"] is None
    assert created["entryCount"] == 2
    first, second = created["entries"]
    assert first == {
        "uid": 0,
        **ST_DEFAULTS,
        "key": ["金箍棒"],
        "content": "重一万三千五百斤。",
        "order": 50,
        "displayIndex": 0,
        "自定义": {"a": 1},
    }
    assert next(iter(first)) == "uid" and list(first)[-1] == "自定义"  # unknown keys kept, after known ones
    assert second["uid"] == 7 and second["position"] == 4 and second["depth"] == 2 and second["role"] == 1
    got = api.get(f"{URL}/{created['id']}").json()
    assert got["entries"] == created["entries"]
    listed = api.get(URL).json()
    assert listed["total"] == 1 and listed["items"][0]["entryCount"] == 2 and "entries" not in listed["items"][0]


def test_update_put_and_patch(api, user):
    novel = Novel.objects.create(owner=user, title="n")
    character = Character.objects.create(novel=novel, name="悟空")
    book = api.post(URL, {"name": "a", "entries": [{"key": ["x"]}]}, format="json").json()
    patched = api.patch(f"{URL}/{book['id']}", {"characterId": character.pk}, format="json").json()
    assert patched["characterId"] == character.pk and patched["name"] == "a" and patched["entryCount"] == 1
    put = api.put(f"{URL}/{book['id']}", {"name": "b"}, format="json").json()
    assert put["name"] == "b" and put["characterId"] is None and put["isGlobal"] is False and put["entries"] == []
    assert api.delete(f"{URL}/{book['id']}").status_code == 204
    assert not Lorebook.objects.exists() and not LorebookEntry.objects.exists()


def test_entries_crud(api):
    book = api.post(URL, {"name": "a"}, format="json").json()
    entries_url = f"{URL}/{book['id']}/entries"
    e0 = api.post(entries_url, {"key": ["龙"], "content": "一条龙"}, format="json")
    assert e0.status_code == 201 and e0.json()["uid"] == 0 and e0.json()["displayIndex"] == 0
    e5 = api.post(entries_url, {"uid": 5, "key": ["虎"], "comment": "老虎", "x-tool": True}, format="json").json()
    assert e5["uid"] == 5 and e5["x-tool"] is True
    e1 = api.post(entries_url, {"key": ["蛇"]}, format="json").json()
    assert e1["uid"] == 1  # smallest free uid, as ST
    taken = api.post(entries_url, {"uid": 5}, format="json")
    assert taken.status_code == 400 and "uid" in taken.json()["details"]

    listed = api.get(entries_url).json()
    assert [e["uid"] for e in listed["items"]] == [0, 1, 5] and listed["total"] == 3

    patched = api.patch(f"{entries_url}/5", {"probability": 30, "sticky": 2}, format="json").json()
    assert patched["probability"] == 30 and patched["sticky"] == 2
    assert patched["comment"] == "老虎" and patched["x-tool"] is True  # PATCH keeps the rest
    put = api.put(f"{entries_url}/5", {"key": ["虎"], "content": "新"}, format="json").json()
    assert put == {"uid": 5, **ST_DEFAULTS, "key": ["虎"], "content": "新"}  # PUT replaces, unknown keys too
    assert api.put(f"{entries_url}/5", {"uid": 6}, format="json").status_code == 400
    assert api.get(f"{entries_url}/5").json() == put
    assert api.delete(f"{entries_url}/5").status_code == 204
    assert api.get(f"{entries_url}/5").status_code == 404
    row = LorebookEntry.objects.get(lorebook_id=book["id"], uid=0)
    assert (row.order, row.disable, row.data["content"]) == (100, False, "一条龙")


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ({"key": "龙"}, "key", "Must be a list of strings."),
        ({"key": ["a", 3]}, "key", "Must be a list of strings."),
        ({"content": 5}, "content", "Must be a string."),
        ({"constant": "yes"}, "constant", "Must be true or false."),
        ({"selectiveLogic": 4}, "selectiveLogic", "Must be one of 0, 1, 2, 3."),
        ({"position": 8}, "position", "Must be one of 0, 1, 2, 3, 4, 5, 6, 7."),
        ({"role": 3}, "role", "Must be one of 0, 1, 2."),
        ({"probability": 101}, "probability", "Must be between 0 and 100."),
        ({"probability": 50.5}, "probability", "Must be an integer."),
        ({"order": "100"}, "order", "Must be an integer."),
        ({"depth": -1}, "depth", "Must be between 0 and 10000."),
        ({"scanDepth": 1001}, "scanDepth", "Must be between 0 and 1000."),
        ({"caseSensitive": 1}, "caseSensitive", "Must be true or false."),
        (
            {"triggers": ["normal", "dance"]},
            "triggers",
            "Unknown generation type dance; expected one of normal, continue, impersonate, swipe, regenerate, quiet.",
        ),
        ({"characterFilter": []}, "characterFilter", "Must be an object {isExclude, names, tags}."),
        ({"delayUntilRecursion": "x"}, "delayUntilRecursion", "Must be an integer."),
        ({"uid": -1}, "uid", "Must be between 0 and 2147483647."),
    ],
)
def test_entry_validation(en, entry, field, message):
    book = en.post(URL, {"name": "a"}, format="json").json()
    response = en.post(f"{URL}/{book['id']}/entries", entry, format="json")
    assert response.status_code == 400
    assert response.json()["details"] == {field: [message]}
    nested = en.post(URL, {"name": "b", "entries": [{"key": ["ok"]}, entry]}, format="json")
    assert nested.status_code == 400 and nested.json()["details"] == {f"entries.1.{field}": [message]}
    assert LorebookEntry.objects.count() == 0 and Lorebook.objects.count() == 1


def test_accepted_values(api):
    book = api.post(URL, {"name": "a"}, format="json").json()
    entry = {
        "key": ["/龙+/i"],
        "delayUntilRecursion": True,
        "caseSensitive": None,
        "groupWeight": None,
        "triggers": ["normal", "swipe", "normal"],
        "characterFilter": {"isExclude": True, "names": ["悟空"]},
        "order": 100.0,
    }
    created = api.post(f"{URL}/{book['id']}/entries", entry, format="json").json()
    assert created["delayUntilRecursion"] is True and created["caseSensitive"] is None
    assert created["groupWeight"] == 100 and created["triggers"] == ["normal", "swipe"] and created["order"] == 100
    assert created["characterFilter"] == {"isExclude": True, "names": ["悟空"], "tags": []}


def test_duplicate_uids_in_a_book_are_refused(api):
    response = api.post(URL, {"name": "a", "entries": [{"uid": 1}, {"uid": 1}]}, format="json")
    assert response.status_code == 400 and "entries.1.uid" in response.json()["details"]
    assert not Lorebook.objects.exists()


def test_character_link_must_be_own(make_client, user, other_user):
    theirs = Character.objects.create(novel=Novel.objects.create(owner=other_user, title="x"), name="秘密")
    response = make_client(user, language="en").post(URL, {"name": "a", "characterId": theirs.pk}, format="json")
    assert response.status_code == 400
    assert response.json()["details"] == {"characterId": [f"Character {theirs.pk} does not exist."]}
    assert not Lorebook.objects.exists()


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_other_users_lorebooks_are_404(make_client, user, other_user, method):
    book = Lorebook.objects.create(owner=other_user, name="秘密")
    LorebookEntry.objects.create(lorebook=book, uid=0, data={"uid": 0, "content": "x"})
    client = make_client(user)
    for url in (f"{URL}/{book.pk}", f"{URL}/{book.pk}/entries/0"):
        response = getattr(client, method)(url, {"name": "改", "content": "改"}, format="json")
        assert response.status_code == 404
    assert client.get(f"{URL}/{book.pk}/entries").status_code == 404
    assert client.post(f"{URL}/{book.pk}/entries", {"content": "y"}, format="json").status_code == 404
    assert client.get(f"{URL}/{book.pk}/export").status_code == 404
    assert client.get(URL).json()["total"] == 0
    book.refresh_from_db()
    assert book.name == "秘密" and LorebookEntry.objects.get().data == {"uid": 0, "content": "x"}


def test_anonymous_is_401(anon):
    assert anon.get(URL).status_code == 401


# ------------------------------------------------------------------------------------- import/export

FULL_ENTRY = {
    "uid": 3,
    **ST_DEFAULTS,
    "key": ["长安"],
    "content": "大唐都城。",
    "order": 20,
    "displayIndex": 0,
    "characterFilter": {"isExclude": False, "names": [], "tags": []},
    "extensions": {"工具": "保留"},
}


def test_import_st_world_json_and_export_round_trip(api):
    world = {
        "entries": {
            "3": FULL_ENTRY,
            "10": {
                "key": "女儿国, 西梁",
                "content": "西梁女国。",
                "probability": "150",
                "position": 9,
                "unknownFlag": [1],
            },
        },
        "originalData": {"name": "老书"},
    }
    response = api.post(f"{URL}/import", {"file": upload("西游.json", json.dumps(world).encode())}, format="multipart")
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "西游"
    assert body["entries"][0] == FULL_ENTRY
    lenient = body["entries"][1]
    assert lenient["uid"] == 10 and lenient["key"] == ["女儿国", "西梁"]  # comma string split
    assert lenient["probability"] == 100 and lenient["position"] == 0  # clamped / default
    assert lenient["unknownFlag"] == [1] and lenient["displayIndex"] == 10

    exported = api.get(f"{URL}/{body['id']}/export?format=st")
    assert exported.status_code == 200 and exported["Content-Type"] == "application/json"
    assert "attachment" in exported["Content-Disposition"] and ".json" in exported["Content-Disposition"]
    doc = json.loads(exported.content)
    assert doc["originalData"] == {"name": "老书"}
    assert doc["entries"]["3"] == FULL_ENTRY and list(doc["entries"]) == ["3", "10"]

    again = api.post(f"{URL}/import", {"file": upload("b.json", exported.content)}, format="multipart").json()
    assert again["entries"] == body["entries"]


def test_import_lorebook_v3_and_export_v3(api):
    v3 = {
        "spec": "lorebook_v3",
        "data": {
            "name": "V3 书",
            "description": "说明",
            "scan_depth": 3,
            "extensions": {"tool": 1},
            "entries": [
                {
                    "keys": ["龙宫"],
                    "content": "东海龙宫。",
                    "enabled": True,
                    "insertion_order": 5,
                    "use_regex": False,
                    "constant": False,
                    "id": 2,
                    "extensions": {"position": 4, "depth": 1, "自定义": "保留"},
                },
                {
                    "keys": ["天宫"],
                    "content": "凌霄宝殿。",
                    "enabled": False,
                    "insertion_order": 9,
                    "use_regex": False,
                    "position": "before_char",
                    "extensions": {},
                },
            ],
        },
    }
    body = api.post(f"{URL}/import", {"file": upload("x.json", json.dumps(v3).encode())}, format="multipart").json()
    assert body["name"] == "V3 书" and body["description"] == "说明"
    b, a = body["entries"]  # ordered by uid: 天宫 got the free uid 1 (its index), 龙宫 kept its id 2
    assert (a["uid"], a["key"], a["order"], a["position"], a["depth"], a["selective"]) == (2, ["龙宫"], 5, 4, 1, False)
    assert a["extensions"]["自定义"] == "保留"
    assert (b["uid"], b["disable"], b["position"]) == (1, True, 0)

    doc = api.get(f"{URL}/{body['id']}/export?format=v3").json()
    assert doc["spec"] == "lorebook_v3"
    book = doc["data"]
    assert book["name"] == "V3 书" and book["description"] == "说明" and book["scan_depth"] == 3
    assert book["extensions"] == {"tool": 1}
    by_id = {e["id"]: e for e in book["entries"]}
    assert by_id[2]["keys"] == ["龙宫"] and by_id[2]["content"] == "东海龙宫。" and by_id[2]["insertion_order"] == 5
    assert by_id[2]["extensions"]["自定义"] == "保留" and by_id[2]["extensions"]["depth"] == 1
    assert by_id[1]["enabled"] is False and by_id[1]["position"] == "before_char"

    again = api.post(f"{URL}/import", {"file": upload("y.json", json.dumps(doc).encode())}, format="multipart").json()
    assert {e["uid"]: (e["key"], e["content"], e["order"], e["disable"], e["position"]) for e in again["entries"]} == {
        e["uid"]: (e["key"], e["content"], e["order"], e["disable"], e["position"]) for e in body["entries"]
    }


def test_import_character_card_book_png(api):
    card = normalize_card_v3(
        {
            "name": "悟空",
            "character_book": {
                "entries": [
                    {
                        "keys": ["金箍棒"],
                        "content": "如意金箍棒。",
                        "insertion_order": 10,
                        "enabled": True,
                        "extensions": {},
                    }
                ]
            },
        }
    )
    png = export_card_png(card, None, minimal_png())
    response = api.post(f"{URL}/import", {"file": upload("wk.png", png, "image/png")}, format="multipart")
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "悟空 的世界书" and [e["key"] for e in body["entries"]] == [["金箍棒"]]
    assert body["entries"][0]["position"] == 1  # book entries without position → after_char, as ST
    named = api.post(
        f"{URL}/import", {"file": upload("wk.png", png, "image/png"), "name": "改名"}, format="multipart"
    ).json()
    assert named["name"] == "改名"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (json.dumps({"spec": "chara_card_v2", "data": {"name": "无书"}}).encode(), "no_character_book"),
        (json.dumps([1, 2]).encode(), "not_a_lorebook"),
        (b"{not json", "bad_json"),
        (b"GIF89a....", "unsupported_format"),
        (minimal_png(), "no_card_chunk"),
    ],
)
def test_import_errors(en, content, code):
    response = en.post(f"{URL}/import", {"file": upload("bad.json", content)}, format="multipart")
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not Lorebook.objects.exists()


def test_import_oversize(en, settings):
    settings.CARD_MAX_BYTES = 100
    world = json.dumps({"entries": {"0": {"content": "x" * 200}}}).encode()
    response = en.post(f"{URL}/import", {"file": upload("big.json", world)}, format="multipart")
    assert response.status_code == 400
    assert response.json()["code"] == "too_large" and response.json()["message"] == "The file is larger than 100 bytes."
    assert not Lorebook.objects.exists()


def test_export_unknown_format_is_400(api):
    book = api.post(URL, {"name": "a"}, format="json").json()
    assert api.get(f"{URL}/{book['id']}/export?format=xml").status_code == 400
    assert json.loads(api.get(f"{URL}/{book['id']}/export").content) == {"entries": {}}


def test_admin_pages_render(admin_client, api):
    book = api.post(URL, {"name": "a", "entries": [{"key": ["龙"], "content": "<b>龙</b>"}]}, format="json").json()
    entry = LorebookEntry.objects.get(lorebook_id=book["id"])
    for url in (
        "/admin/worldviews/lorebook/",
        f"/admin/worldviews/lorebook/{book['id']}/change/",
        "/admin/worldviews/lorebookentry/",
        f"/admin/worldviews/lorebookentry/{entry.pk}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    page = admin_client.get(f"/admin/worldviews/lorebook/{book['id']}/change/").content.decode()
    assert "&lt;b&gt;龙&lt;/b&gt;" in page  # content is escaped
    data = {**entry.data, "order": 7, "comment": "改"}
    saved = admin_client.post(
        f"/admin/worldviews/lorebookentry/{entry.pk}/change/",
        {"lorebook": book["id"], "data": json.dumps(data)},
    )
    assert saved.status_code == 302
    entry.refresh_from_db()
    assert (entry.order, entry.data["comment"], entry.data["uid"]) == (7, "改", 0)
