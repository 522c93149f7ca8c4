import pytest

from apps.characters.models import Character, CharacterField
from apps.novels.models import Novel
from apps.worldviews.models import Worldview

pytestmark = pytest.mark.django_db


def test_novel_crud(api):
    created = api.post("/api/v1/novels", {"title": "星际迷途", "description": "科幻"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "title", "description", "createdAt", "updatedAt"}
    nid = body["id"]
    assert api.get(f"/api/v1/novels/{nid}").json()["title"] == "星际迷途"
    assert (
        api.patch(f"/api/v1/novels/{nid}", {"description": "硬科幻"}, format="json").json()["description"] == "硬科幻"
    )
    put = api.put(f"/api/v1/novels/{nid}", {"title": "新名字"}, format="json").json()
    assert put["title"] == "新名字" and put["description"] == ""
    listing = api.get("/api/v1/novels?search=新").json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == nid
    assert api.delete(f"/api/v1/novels/{nid}").status_code == 204
    assert not Novel.objects.filter(pk=nid).exists()


def test_novel_title_required(api):
    response = api.post("/api/v1/novels", {"description": "x"}, format="json")
    assert response.status_code == 400
    assert list(response.json()["details"]) == ["title"]
    assert Novel.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_other_users_novel_is_404(make_client, user, other_user, method):
    novel = Novel.objects.create(owner=other_user, title="秘密")
    response = getattr(make_client(user), method)(f"/api/v1/novels/{novel.pk}", {"title": "hack"}, format="json")
    assert response.status_code == 404
    assert response.json() == {"statusCode": 404, "message": "未找到。", "error": "Not Found"}
    novel.refresh_from_db()
    assert novel.title == "秘密"


def test_anonymous_gets_401(anon, other_user):
    novel = Novel.objects.create(owner=other_user, title="秘密")
    assert anon.get(f"/api/v1/novels/{novel.pk}").status_code == 401
    assert anon.get("/api/v1/novels").status_code == 401


def test_list_shows_only_own_novels(make_client, user, other_user):
    Novel.objects.create(owner=user, title="mine")
    Novel.objects.create(owner=other_user, title="theirs")
    body = make_client(user).get("/api/v1/novels").json()
    assert [n["title"] for n in body["items"]] == ["mine"] and body["total"] == 1


def test_deleting_novel_deletes_characters_and_worldviews(api, user):
    novel = Novel.objects.create(owner=user, title="n")
    character = Character.objects.create(novel=novel, name="李明")
    CharacterField.objects.create(character=character, key="年龄", value="28岁")
    Worldview.objects.create(novel=novel, name="世界")
    assert api.delete(f"/api/v1/novels/{novel.pk}").status_code == 204
    assert Character.objects.count() == 0 and Worldview.objects.count() == 0 and CharacterField.objects.count() == 0
