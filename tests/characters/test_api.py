"""Characters and worldviews share one shape and one set of rules; both are exercised here."""

import pytest

from apps.characters.models import Character
from apps.novels.models import Novel
from apps.worldviews.models import Worldview

pytestmark = pytest.mark.django_db

KINDS = [("/api/v1/characters", Character), ("/api/v1/worldviews", Worldview)]


@pytest.fixture
def novel(user):
    return Novel.objects.create(owner=user, title="都市")


@pytest.mark.parametrize(("url", "model"), KINDS)
def test_create_read_update_delete_with_ordered_fields(api, novel, url, model):
    fields = [
        {"key": "年龄", "value": "28岁"},
        {"key": "职业", "value": "程序员"},
        {"key": "性格", "value": "内向、细心"},
    ]
    created = api.post(url, {"novelId": novel.pk, "name": "李明", "fields": fields}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["novelId"] == novel.pk and body["name"] == "李明" and body["fields"] == fields
    eid = body["id"]
    assert api.get(f"{url}/{eid}").json()["fields"] == fields
    # PATCH without fields keeps them; with fields replaces them in the new order
    assert api.patch(f"{url}/{eid}", {"name": "李明明"}, format="json").json()["fields"] == fields
    reordered = [fields[2], fields[0]]
    patched = api.patch(f"{url}/{eid}", {"fields": reordered}, format="json").json()
    assert patched["fields"] == reordered and patched["name"] == "李明明"
    put = api.put(f"{url}/{eid}", {"novelId": novel.pk, "name": "王五"}, format="json").json()
    assert put["fields"] == [] and put["name"] == "王五"
    assert api.delete(f"{url}/{eid}").status_code == 204
    assert not model.objects.filter(pk=eid).exists()


@pytest.mark.parametrize(("url", "model"), KINDS)
def test_filter_by_novel_and_search(api, user, url, model):
    n1 = Novel.objects.create(owner=user, title="a")
    n2 = Novel.objects.create(owner=user, title="b")
    model.objects.create(novel=n1, name="李明")
    model.objects.create(novel=n1, name="张三")
    model.objects.create(novel=n2, name="李四")
    assert {e["name"] for e in api.get(f"{url}?novelId={n1.pk}").json()["items"]} == {"李明", "张三"}
    assert {e["name"] for e in api.get(f"{url}?search=李").json()["items"]} == {"李明", "李四"}
    bad = api.get(f"{url}?novelId=abc")
    assert bad.status_code == 400 and "novelId" in bad.json()["details"]


@pytest.mark.parametrize(("url", "model"), KINDS)
def test_cannot_create_in_someone_elses_novel(make_client, user, other_user, url, model):
    theirs = Novel.objects.create(owner=other_user, title="x")
    response = make_client(user).post(url, {"novelId": theirs.pk, "name": "入侵"}, format="json")
    assert response.status_code == 400
    assert response.json()["details"] == {"novelId": [f"小说 {theirs.pk} 不存在。"]}
    assert model.objects.count() == 0


@pytest.mark.parametrize(("url", "model"), KINDS)
def test_cannot_move_into_someone_elses_novel(make_client, user, other_user, novel, url, model):
    theirs = Novel.objects.create(owner=other_user, title="x")
    entity = model.objects.create(novel=novel, name="李明")
    response = make_client(user).patch(f"{url}/{entity.pk}", {"novelId": theirs.pk}, format="json")
    assert response.status_code == 400
    entity.refresh_from_db()
    assert entity.novel_id == novel.pk


@pytest.mark.parametrize(("url", "model"), KINDS)
@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_other_users_entities_are_404(make_client, other_user, user, url, model, method):
    theirs = Novel.objects.create(owner=other_user, title="x")
    entity = model.objects.create(novel=theirs, name="秘密")
    response = getattr(make_client(user), method)(
        f"{url}/{entity.pk}", {"novelId": theirs.pk, "name": "改"}, format="json"
    )
    assert response.status_code == 404
    entity.refresh_from_db()
    assert entity.name == "秘密"
    assert make_client(user).get(url).json()["total"] == 0


@pytest.mark.parametrize(("url", "model"), KINDS)
def test_field_validation(api, novel, url, model):
    response = api.post(url, {"novelId": novel.pk, "name": "x", "fields": [{"value": "no key"}]}, format="json")
    assert response.status_code == 400
    assert response.json()["details"] == {"fields.0.key": ["该字段是必填项。"]}
    assert model.objects.count() == 0


@pytest.mark.parametrize(("url", "model"), KINDS)
def test_patch_with_an_incomplete_field_is_400_and_changes_nothing(api, novel, url, model):
    entity = api.post(
        url, {"novelId": novel.pk, "name": "李明", "fields": [{"key": "年龄", "value": "28岁"}]}, format="json"
    ).json()
    response = api.patch(f"{url}/{entity['id']}", {"fields": [{"value": "no key"}]}, format="json")
    assert response.status_code == 400
    assert response.json()["details"] == {"fields.0.key": ["该字段是必填项。"]}
    assert api.get(f"{url}/{entity['id']}").json()["fields"] == [{"key": "年龄", "value": "28岁"}]
