import pytest

from apps.characters.models import Character
from apps.novels.models import Novel
from apps.prompts.models import Prompt, PromptContent

pytestmark = pytest.mark.django_db


@pytest.fixture
def card(user):
    novel = Novel.objects.create(owner=user, title="n")
    return Character.objects.create(novel=novel, name="李明")


def body(**overrides):
    data = {
        "title": "故事开头",
        "description": "d",
        "isPublic": False,
        "contents": [
            {"order": 1, "type": "text", "role": "system", "content": "你是一名小说作家。主角：{{主角名字}}"},
            {"order": 2, "type": "text", "role": "user", "content": "背景：{{故事背景}}"},
        ],
    }
    data.update(overrides)
    return data


def test_create_and_read_prompt_with_contents(api, user, card):
    data = body()
    data["contents"].append({"order": 0, "type": "character", "referenceId": card.pk, "name": "主角设定"})
    response = api.post("/api/v1/prompts", data, format="json")
    assert response.status_code == 201
    out = response.json()
    assert out["authorId"] == user.pk and out["isPublic"] is False
    assert [c["order"] for c in out["contents"]] == [0, 1, 2]
    assert out["contents"][0] == {
        "order": 0,
        "type": "character",
        "role": "system",
        "content": "",
        "referenceId": card.pk,
        "name": "主角设定",
    }
    assert out["contents"][1]["referenceId"] is None


def test_put_replaces_contents_and_patch_keeps_them(api):
    pid = api.post("/api/v1/prompts", body(), format="json").json()["id"]
    patched = api.patch(f"/api/v1/prompts/{pid}", {"isPublic": True}, format="json").json()
    assert patched["isPublic"] is True and len(patched["contents"]) == 2
    new_contents = [{"order": 5, "type": "text", "content": "只有这一条"}]
    put = api.put(f"/api/v1/prompts/{pid}", body(contents=new_contents), format="json").json()
    assert [c["content"] for c in put["contents"]] == ["只有这一条"] and put["isPublic"] is False
    assert PromptContent.objects.filter(prompt_id=pid).count() == 1


@pytest.mark.parametrize(
    ("contents", "details"),
    [
        (
            [{"order": 1, "type": "text", "content": "a"}, {"order": 1, "type": "text", "content": "b"}],
            {"contents.1.order": ["顺序 1 重复使用。"]},
        ),
        ([{"order": 1, "type": "text", "content": "  "}], {"contents.0.content": ["文本内容不能为空。"]}),
        ([{"order": 1, "type": "character"}], {"contents.0.referenceId": ["引用内容需要 referenceId。"]}),
        (
            [{"order": 1, "type": "worldview", "referenceId": 999}],
            {"contents.0.referenceId": ["世界观 999 不在您的小说中。"]},
        ),
        ([{"order": 1, "type": "image", "content": "x"}], {"contents.0.type": ["“image” 不是合法选项。"]}),
        (
            [{"order": 1, "type": "text", "content": "x", "role": "tool"}],
            {"contents.0.role": ["“tool” 不是合法选项。"]},
        ),
    ],
)
def test_content_validation_errors_in_envelope(api, contents, details):
    response = api.post("/api/v1/prompts", body(contents=contents), format="json")
    assert response.status_code == 400
    assert response.json()["details"] == details
    assert Prompt.objects.count() == 0


def test_reference_to_someone_elses_card_is_rejected_on_write(make_client, user, other_user):
    their_novel = Novel.objects.create(owner=other_user, title="x")
    their_card = Character.objects.create(novel=their_novel, name="别人的")
    contents = [{"order": 1, "type": "character", "referenceId": their_card.pk}]
    response = make_client(user).post("/api/v1/prompts", body(contents=contents), format="json")
    assert response.status_code == 400
    assert response.json()["details"] == {"contents.0.referenceId": [f"人物卡 {their_card.pk} 不在您的小说中。"]}


def test_validation_in_english(make_client, user):
    contents = [{"order": 1, "type": "text", "content": "a"}, {"order": 1, "type": "text", "content": "b"}]
    response = make_client(user, language="en").post("/api/v1/prompts", body(contents=contents), format="json")
    assert response.json()["details"] == {"contents.1.order": ["Order 1 is used twice."]}


# --- isolation matrix ---------------------------------------------------------------------------


@pytest.fixture
def prompts(user, other_user):
    mine = Prompt.objects.create(author=user, title="mine-private")
    mine_public = Prompt.objects.create(author=user, title="mine-public", is_public=True)
    theirs = Prompt.objects.create(author=other_user, title="theirs-private")
    theirs_public = Prompt.objects.create(author=other_user, title="theirs-public", is_public=True)
    return {"mine": mine, "mine_public": mine_public, "theirs": theirs, "theirs_public": theirs_public}


@pytest.mark.parametrize(
    ("which", "read", "write"),
    [("mine", 200, 200), ("mine_public", 200, 200), ("theirs", 404, 404), ("theirs_public", 200, 403)],
)
def test_prompt_isolation_matrix(make_client, user, prompts, which, read, write):
    client = make_client(user)
    prompt = prompts[which]
    assert client.get(f"/api/v1/prompts/{prompt.pk}").status_code == read
    assert client.patch(f"/api/v1/prompts/{prompt.pk}", {"title": "changed"}, format="json").status_code == write
    prompt.refresh_from_db()
    assert (prompt.title == "changed") is (write == 200)
    deleted = client.delete(f"/api/v1/prompts/{prompt.pk}").status_code
    assert deleted == (204 if write == 200 else write)
    assert Prompt.objects.filter(pk=prompt.pk).exists() is (write != 200)


def test_anonymous_cannot_read_even_public(anon, prompts):
    assert anon.get(f"/api/v1/prompts/{prompts['theirs_public'].pk}").status_code == 401
    assert anon.get("/api/v1/prompts").status_code == 401


@pytest.mark.parametrize(
    ("scope", "titles"),
    [
        ("mine", {"mine-private", "mine-public"}),
        ("public", {"mine-public", "theirs-public"}),
        ("all", {"mine-private", "mine-public", "theirs-public"}),
        (None, {"mine-private", "mine-public", "theirs-public"}),
    ],
)
def test_scope_filter(api, prompts, scope, titles):
    url = "/api/v1/prompts" + (f"?scope={scope}" if scope else "")
    response = api.get(url).json()
    assert {p["title"] for p in response["items"]} == titles and response["total"] == len(titles)


def test_bad_scope_is_400(api):
    response = api.get("/api/v1/prompts?scope=everything")
    assert response.status_code == 400 and "scope" in response.json()["details"]


def test_patch_with_incomplete_contents_is_400(api):
    pid = api.post("/api/v1/prompts", body(), format="json").json()["id"]
    response = api.patch(f"/api/v1/prompts/{pid}", {"contents": [{"content": "no order, no type"}]}, format="json")
    assert response.status_code == 400
    assert set(response.json()["details"]) == {"contents.0.order", "contents.0.type"}
    assert len(api.get(f"/api/v1/prompts/{pid}").json()["contents"]) == 2


def test_patch_contents_gets_the_defaults(api):
    pid = api.post("/api/v1/prompts", body(), format="json").json()["id"]
    patched = api.patch(
        f"/api/v1/prompts/{pid}", {"contents": [{"order": 3, "type": "text", "content": "x"}]}, format="json"
    ).json()
    assert patched["contents"] == [
        {"order": 3, "type": "text", "role": "system", "content": "x", "referenceId": None, "name": ""}
    ]
