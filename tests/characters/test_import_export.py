"""Character cards through the API: import (JSON V1/V2/V3/hybrid, PNG, CHARX), export (JSON v2/v3, PNG),
avatar, cards edited over REST, the embedded lorebook, writing-mode rendering, errors and isolation."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.cards import export_card_json, export_card_png, minimal_png, parse_card_bytes, parse_card_json
from apps.characters.models import Character, CharacterField
from apps.characters.selectors import character_lorebook_entries
from apps.characters.services import IMPORT_NOVEL_TITLE
from apps.novels.models import Novel
from apps.prompts.models import Prompt, PromptContent
from apps.prompts.selectors import prompt_resolve

pytestmark = pytest.mark.django_db

URL = "/api/v1/characters"
IMPORT = f"{URL}/import"

V1 = {
    "name": "孙悟空",
    "description": "齐天大圣。",
    "personality": "桀骜不驯",
    "scenario": "取经路上",
    "first_mes": "俺老孙来也！",
    "mes_example": "",
    "creatorcomment": "经典角色",
    "未知字段": [1, 2, 3],
}
BOOK = {
    "name": "西游设定",
    "scan_depth": 3,
    "extensions": {"作者扩展": True},
    "entries": [
        {
            "keys": ["金箍棒"],
            "content": "重一万三千五百斤。",
            "extensions": {"position": 4, "depth": 2, "自定义": "保留"},
            "enabled": True,
            "insertion_order": 50,
            "comment": "兵器",
            "id": 7,
        }
    ],
}
V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "猪八戒",
        "description": "天蓬元帅。",
        "personality": "贪吃",
        "scenario": "高老庄",
        "first_mes": "猴哥！",
        "mes_example": "<START>\n{{char}}: 散伙吧",
        "creator_notes": "不要进入提示词",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": ["师父！"],
        "tags": ["西游"],
        "creator": "吴承恩",
        "character_version": "1",
        "extensions": {"talkativeness": "0.5", "world": "西游设定", "depth_prompt": {"prompt": "p", "depth": 4}},
        "character_book": BOOK,
        "未知数据键": {"x": 1},
    },
    "未知顶层": "保留",
}
V3 = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "白骨精",
        "nickname": "白夫人",
        "description": "白虎岭上的妖精。",
        "first_mes": "长老，吃斋饭吗？",
        "group_only_greetings": [],
        "extensions": {"risuai": {"保留": True}},
    },
}
HYBRID = {
    **{k: V2["data"][k] for k in ("name", "description", "personality", "scenario", "first_mes", "mes_example")},
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {**V2["data"], "character_book": None},
    "avatar": "none",
    "create_date": "2024-1-1",
    "chat": "猪八戒 - 2024",
}
del HYBRID["data"]["character_book"]
ICON = minimal_png(2, 2, (200, 30, 30, 255))


def v2_png() -> bytes:
    """V2 as a PNG card with both chunks, unknown keys included (as SillyTavern would write it)."""
    return export_card_png(parse_card_json(V2).card_v3, V2, ICON)


def upload(name: str, content: bytes, content_type: str = "application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def as_json(doc: object) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def charx(card: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", as_json(card))
        archive.writestr("assets/icon/images/main.png", ICON)
    return buffer.getvalue()


def do_import(client, name, content, **extra):
    return client.post(IMPORT, {"file": upload(name, content), **extra}, format="multipart")


@pytest.fixture
def en(make_client, user):
    return make_client(user, language="en")


# ------------------------------------------------------------------------------------------- import


def test_import_v1_json_into_the_import_novel(api, user):
    response = do_import(api, "wukong.json", as_json(V1))
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "novelId", "name", "fields", "card", "avatarUrl", "createdAt", "updatedAt"}
    assert body["name"] == "孙悟空" and body["avatarUrl"] is None
    assert body["card"]["spec"] == "chara_card_v3" and body["card"]["data"]["creator_notes"] == "经典角色"
    assert body["fields"] == [
        {"key": "姓名", "value": "孙悟空"},
        {"key": "描述", "value": "齐天大圣。"},
        {"key": "性格", "value": "桀骜不驯"},
        {"key": "场景", "value": "取经路上"},
        {"key": "开场白", "value": "俺老孙来也！"},
    ]
    novel = Novel.objects.get(pk=body["novelId"])
    assert novel.owner == user and novel.title == IMPORT_NOVEL_TITLE
    character = Character.objects.get(pk=body["id"])
    assert (character.spec, character.source_format, character.card_original) == ("v1", "json", V1)
    second = do_import(api, "again.json", as_json(V1)).json()
    assert second["novelId"] == novel.pk and Novel.objects.filter(owner=user).count() == 1


def test_import_v2_with_book_keeps_it_and_exposes_st_entries(api):
    body = do_import(api, "bajie.json", as_json(V2)).json()
    assert body["card"]["data"]["character_book"]["entries"][0]["keys"] == ["金箍棒"]
    assert body["card"]["data"]["extensions"] == V2["data"]["extensions"]
    assert all("不要进入提示词" not in f["value"] for f in body["fields"])  # creator_notes never in a prompt
    entries = character_lorebook_entries(Character.objects.get(pk=body["id"]))
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["uid"], entry["key"], entry["content"], entry["order"], entry["position"], entry["depth"]) == (
        7,
        ["金箍棒"],
        "重一万三千五百斤。",
        50,
        4,
        2,
    )
    assert entry["comment"] == "兵器" and entry["disable"] is False and entry["extensions"]["自定义"] == "保留"
    assert character_lorebook_entries(Character.objects.create(novel_id=body["novelId"], name="x")) == []


def test_import_v3_and_hybrid(api):
    v3 = do_import(api, "bgj.json", as_json(V3)).json()
    assert v3["card"]["data"]["nickname"] == "白夫人"
    assert {"key": "昵称", "value": "白夫人"} in v3["fields"]
    hybrid = do_import(api, "hybrid.json", as_json(HYBRID)).json()
    assert hybrid["name"] == "猪八戒" and Character.objects.get(pk=hybrid["id"]).spec == "v2"


def test_import_into_a_given_novel(api, user, other_user):
    mine = Novel.objects.create(owner=user, title="mine")
    assert do_import(api, "a.json", as_json(V1), novelId=mine.pk).json()["novelId"] == mine.pk
    theirs = Novel.objects.create(owner=other_user, title="theirs")
    response = do_import(api, "a.json", as_json(V1), novelId=theirs.pk)
    assert response.status_code == 400 and "novelId" in response.json()["details"]
    assert Character.objects.filter(novel=theirs).count() == 0


def test_import_png_with_both_chunks_and_avatar(api):
    png = v2_png()
    response = api.post(IMPORT, {"file": upload("bajie.png", png, "image/png")}, format="multipart")
    assert response.status_code == 201
    body = response.json()
    assert body["avatarUrl"] == f"/api/v1/characters/{body['id']}/avatar"
    avatar = api.get(body["avatarUrl"])
    assert avatar.status_code == 200 and avatar["Content-Type"] == "image/png"
    assert avatar.content == ICON  # the image without its card chunks
    etag = avatar["ETag"]
    assert api.get(body["avatarUrl"], HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert Character.objects.get(pk=body["id"]).source_format == "png"
    assert body["card"]["data"]["character_book"]["name"] == "西游设定"


def test_import_charx(api):
    card = {
        **V3,
        "data": {
            **V3["data"],
            "assets": [{"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"}],
        },
    }
    body = do_import(api, "bgj.charx", charx(card)).json()
    assert body["name"] == "白骨精" and body["avatarUrl"] is not None
    assert api.get(body["avatarUrl"]).content == ICON
    assert Character.objects.get(pk=body["id"]).source_format == "charx"


# ------------------------------------------------------------------------------------------- export


def test_export_json_v3_and_v2_keep_unknown_keys_and_extensions(api):
    body = do_import(api, "bajie.json", as_json(V2)).json()
    v3 = api.get(f"{URL}/{body['id']}/export?format=json&spec=v3")
    assert v3.status_code == 200 and v3["Content-Type"] == "application/json"
    assert v3["Content-Disposition"] == "attachment; filename*=utf-8''%E7%8C%AA%E5%85%AB%E6%88%92.json"
    doc = json.loads(v3.content)
    assert doc["spec"] == "chara_card_v3" and doc["未知顶层"] == "保留"
    assert doc["data"]["未知数据键"] == {"x": 1} and doc["data"]["extensions"] == V2["data"]["extensions"]
    assert doc["data"]["character_book"]["entries"][0]["extensions"]["自定义"] == "保留"
    v2 = json.loads(api.get(f"{URL}/{body['id']}/export?spec=v2").content)
    assert v2 == export_card_json(body["card"], V2, spec="v2")
    assert v2["spec"] == "chara_card_v2" and v2["未知顶层"] == "保留" and v2["data"]["未知数据键"] == {"x": 1}
    # stored verbatim: key order survives too (PostgreSQL jsonb would sort the keys)
    assert list(v2) == list(V2) and list(v2["data"]) == list(V2["data"])
    assert list(v2["data"]["extensions"]) == ["talkativeness", "world", "depth_prompt"]
    assert api.get(f"{URL}/{body['id']}/export?spec=v4").status_code == 400
    assert api.get(f"{URL}/{body['id']}/export?format=gif").status_code == 400


def test_export_png_round_trip(api):
    body = do_import(api, "bajie.png", v2_png()).json()
    exported = api.get(f"{URL}/{body['id']}/export?format=png")
    assert exported.status_code == 200 and exported["Content-Type"] == "image/png"
    assert exported["Content-Disposition"].endswith(".png")
    parsed = parse_card_bytes(exported.content)
    assert parsed.avatar_png == ICON and parsed.spec == "v3"
    assert parsed.original["未知顶层"] == "保留" and parsed.original["data"]["未知数据键"] == {"x": 1}
    again = do_import(api, "again.png", exported.content).json()
    assert again["card"] == body["card"] and again["fields"] == body["fields"]


def test_export_of_a_writing_mode_character(api, user):
    novel = Novel.objects.create(owner=user, title="n")
    created = api.post(
        URL, {"novelId": novel.pk, "name": "李明", "fields": [{"key": "年龄", "value": "28岁"}]}, format="json"
    ).json()
    assert created["card"] is None and created["avatarUrl"] is None
    assert api.get(f"{URL}/{created['id']}/avatar").status_code == 404
    doc = json.loads(api.get(f"{URL}/{created['id']}/export").content)
    assert doc["data"]["name"] == "李明" and doc["data"]["description"] == "年龄: 28岁"
    png = api.get(f"{URL}/{created['id']}/export?format=png").content
    assert parse_card_bytes(png).card_v3["data"]["name"] == "李明"


# -------------------------------------------------------------------------------- cards over REST


def test_create_and_edit_card_over_rest(api, user):
    novel = Novel.objects.create(owner=user, title="n")
    created = api.post(URL, {"novelId": novel.pk, "card": V3}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "白骨精" and body["card"]["data"]["extensions"] == {"risuai": {"保留": True}}
    assert body["fields"][0] == {"key": "姓名", "value": "白骨精"}
    cid = body["id"]
    # a new card (no fields sent) re-derives the fields
    card = body["card"]
    card["data"]["description"] = "新描述"
    patched = api.patch(f"{URL}/{cid}", {"card": card}, format="json").json()
    assert {"key": "描述", "value": "新描述"} in patched["fields"]
    # renaming renames the card and the derived fields
    renamed = api.patch(f"{URL}/{cid}", {"name": "白夫人"}, format="json").json()
    assert renamed["card"]["data"]["name"] == "白夫人" and renamed["fields"][0] == {"key": "姓名", "value": "白夫人"}
    # explicit fields win and stop following the card
    own = [{"key": "年龄", "value": "千岁"}]
    assert api.patch(f"{URL}/{cid}", {"fields": own}, format="json").json()["fields"] == own
    card["data"]["description"] = "再改"
    after = api.patch(f"{URL}/{cid}", {"card": card}, format="json").json()
    assert after["fields"] == own and after["card"]["data"]["description"] == "再改"
    # PUT without fields: derived from the card again
    put = api.put(f"{URL}/{cid}", {"novelId": novel.pk, "name": "白骨精"}, format="json").json()
    assert put["fields"][0] == {"key": "姓名", "value": "白骨精"} and put["card"] is not None
    # a card with another name renames the character
    card = put["card"]
    card["data"]["name"] = "尸魔"
    renamed = api.patch(f"{URL}/{cid}", {"card": card}, format="json").json()
    assert renamed["name"] == "尸魔" and renamed["fields"][0] == {"key": "姓名", "value": "尸魔"}
    put = renamed
    # null removes the card, the rows stay
    removed = api.patch(f"{URL}/{cid}", {"card": None}, format="json").json()
    assert removed["card"] is None and removed["fields"] == put["fields"]


def test_rest_edit_keeps_imported_original(api):
    body = do_import(api, "bajie.json", as_json(V2)).json()
    card = body["card"]
    card["data"]["personality"] = "懒"
    api.patch(f"{URL}/{body['id']}", {"card": card}, format="json")
    doc = json.loads(api.get(f"{URL}/{body['id']}/export").content)
    assert doc["data"]["personality"] == "懒" and doc["未知顶层"] == "保留" and doc["data"]["未知数据键"] == {"x": 1}


@pytest.mark.parametrize("card", ["text", [1, 2], {"spec": "lorebook_v3", "data": {}}, {"foo": 1}])
def test_card_validation(en, user, card):
    novel = Novel.objects.create(owner=user, title="n")
    response = en.post(URL, {"novelId": novel.pk, "name": "x", "card": card}, format="json")
    assert response.status_code == 400 and "card" in response.json()["details"]
    assert not Character.objects.exists()


def test_name_required_without_card(en, user):
    novel = Novel.objects.create(owner=user, title="n")
    response = en.post(URL, {"novelId": novel.pk}, format="json")
    assert response.status_code == 400 and response.json()["details"] == {"name": ["This field is required."]}


# ------------------------------------------------------------------------------------ writing mode


def test_imported_card_renders_in_writing_mode(api, user):
    body = do_import(api, "wukong.json", as_json(V1)).json()
    prompt = Prompt.objects.create(author=user, title="p")
    PromptContent.objects.create(prompt=prompt, order=1, type="character", reference_id=body["id"])
    resolved = prompt_resolve(user=user, prompt_id=prompt.pk)
    assert resolved.contents[0].text == (
        "【人物卡：孙悟空】\n姓名: 孙悟空\n描述: 齐天大圣。\n性格: 桀骜不驯\n场景: 取经路上\n开场白: 俺老孙来也！"
    )


# ------------------------------------------------------------------------------------------ errors


def _png_with_chunk(keyword: bytes, payload: bytes) -> bytes:
    import struct
    import zlib

    png = minimal_png()
    body = keyword + b"\0" + payload
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return png[:-12] + chunk + png[-12:]


@pytest.mark.parametrize(
    ("name", "content", "code", "message"),
    [
        (
            "x.bin",
            b"\x00\x01 random",
            "not_a_card",
            "The file is not a character card (expected a PNG/APNG, JSON or CHARX card).",
        ),
        (
            "x.gif",
            b"GIF89a\x01\x00",
            "unsupported_format",
            "This file format is not supported; upload a PNG/APNG, JSON or CHARX card.",
        ),
        (
            "x.png",
            minimal_png(),
            "no_card_chunk",
            "The PNG image has no character card data (no 'ccv3' or 'chara' text chunk).",
        ),
        (
            "x.png",
            _png_with_chunk(b"chara", b"%%%not base64%%%"),
            "bad_base64",
            "The card data in the PNG is not valid base64.",
        ),
        ("x.png", _png_with_chunk(b"chara", base64.b64encode(b"{broken")), "bad_json", "The card JSON is invalid."),
        ("x.png", minimal_png()[:20], "bad_png", "The PNG file is corrupt."),
        ("x.json", b"{broken", "bad_json", "The card JSON is invalid."),
        (
            "x.json",
            as_json({"spec": "lorebook_v3", "data": {"entries": []}}),
            "not_a_card",
            "The file is not a character card (expected a PNG/APNG, JSON or CHARX card).",
        ),
        (
            "x.charx",
            b"PK\x03\x04garbage",
            "bad_zip",
            "The CHARX archive is corrupt or uses an unsupported zip feature.",
        ),
    ],
)
def test_bad_files(en, name, content, code, message):
    response = do_import(en, name, content)
    assert response.status_code == 400
    body = response.json()
    assert (body["statusCode"], body["error"], body["code"], body["message"]) == (400, "Bad Request", code, message)
    assert body["reason"]  # the codec's own sentence
    assert not Character.objects.exists() and not Novel.objects.exists()


def test_oversize(en, settings):
    settings.CARD_MAX_BYTES = 1024
    response = do_import(en, "big.json", as_json({**V1, "description": "x" * 2000}))
    assert response.status_code == 400
    assert response.json()["code"] == "too_large" and response.json()["message"] == "The file is larger than 1 KB."
    assert not Character.objects.exists()


def test_messages_default_to_chinese_codes_stay(api):
    response = do_import(api, "x.png", minimal_png())
    assert response.status_code == 400 and response.json()["code"] == "no_card_chunk"


def test_missing_file(en):
    response = en.post(IMPORT, {}, format="multipart")
    assert response.status_code == 400 and "file" in response.json()["details"]


# ------------------------------------------------------------------------------------------ isolation


def test_other_users_cards_are_invisible(make_client, user, other_user):
    theirs = do_import(make_client(other_user), "bajie.png", v2_png()).json()
    client = make_client(user)
    for path in ("", "/export", "/export?format=png", "/avatar"):
        assert client.get(f"{URL}/{theirs['id']}{path}").status_code == 404
    assert client.get(URL).json()["total"] == 0
    assert client.patch(f"{URL}/{theirs['id']}", {"card": V1}, format="json").status_code == 404
    assert CharacterField.objects.filter(character_id=theirs["id"]).count() == len(theirs["fields"])


def test_anonymous_is_401(anon):
    assert anon.post(IMPORT, {"file": upload("a.json", as_json(V1))}, format="multipart").status_code == 401
    assert anon.get(f"{URL}/1/avatar").status_code == 401


def test_admin_pages_render(admin_client, api):
    body = do_import(api, "bajie.png", v2_png()).json()
    assert admin_client.get("/admin/characters/character/").status_code == 200
    page = admin_client.get(f"/admin/characters/character/{body['id']}/change/")
    assert page.status_code == 200 and b"data:image/png;base64," in page.content
