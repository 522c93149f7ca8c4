"""Every error comes back as `{"statusCode", "message", "error"}`, translated, never as HTML."""

import pytest
from django.contrib.auth.models import Group

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api.urls")]


def test_validation_error_has_details_with_camel_case_fields(api):
    response = api.post("/api/v1/test/echo", {"temperature": 3}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["statusCode"] == 400 and body["error"] == "Bad Request"
    assert set(body["details"]) == {"promptId", "temperature"}
    assert body["details"]["promptId"] == ["该字段是必填项。"]
    assert body["message"].startswith("promptId: ")


def test_validation_error_in_english(make_client, user):
    response = make_client(user, language="en").post("/api/v1/test/echo", {"temperature": 3}, format="json")
    body = response.json()
    assert body["details"]["promptId"] == ["This field is required."]
    assert body["details"]["temperature"] == ["Ensure this value is less than or equal to 2."]


def test_nested_validation_errors_are_flattened(api):
    response = api.post("/api/v1/test/echo", {"promptId": 1, "history": [{"a": 1}, "oops"]}, format="json")
    assert response.status_code == 400
    assert list(response.json()["details"]) == ["history.1"]


def test_malformed_json_is_400(api):
    response = api.post("/api/v1/test/echo", data=b"{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["message"].startswith("JSON 格式错误")


def test_camel_case_in_and_out(api):
    response = api.post("/api/v1/test/echo", {"promptId": 7}, format="json")
    assert response.status_code == 200
    assert response.json() == {"promptId": 7, "temperature": 0.7}


@pytest.mark.parametrize(
    ("language", "message"),
    [(None, "身份认证信息未提供。"), ("en", "Authentication credentials were not provided.")],
)
def test_401_translated(make_client, language, message):
    response = make_client(language=language).get("/api/v1/test/guarded")
    assert response.status_code == 401
    assert response.json() == {"statusCode": 401, "message": message, "error": "Unauthorized"}


def test_403_without_permission(make_client, user):
    user.groups.remove(Group.objects.get(name="writer"))
    response = make_client(user).get("/api/v1/test/guarded")
    assert response.status_code == 403
    assert response.json() == {"statusCode": 403, "message": "您没有执行该操作的权限。", "error": "Forbidden"}


def test_403_in_english(make_client, user):
    user.groups.clear()
    response = make_client(user, language="en").get("/api/v1/test/guarded")
    assert response.json()["message"] == "You do not have permission to perform this action."


def test_permission_through_default_role(api):
    assert api.get("/api/v1/test/guarded").json() == {"ok": True}


def test_superuser_holds_every_permission(make_user, make_client):
    admin = make_user("root", is_staff=True)
    admin.groups.clear()
    admin.is_superuser = True
    admin.save()
    assert make_client(admin).get("/api/v1/test/guarded").status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/unknown/deeper/path", "/api/v1/auth/tokens/abc"])
def test_unknown_api_urls_are_json_404(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"statusCode": 404, "message": "未找到。", "error": "Not Found"}


def test_unknown_api_url_in_english(make_client):
    response = make_client(language="en").get("/api/v1/nope")
    assert response.json()["message"] == "Not found."


def test_405_method_not_allowed(api):
    response = api.put("/api/v1/auth/me", {}, format="json")
    assert response.status_code == 405
    body = response.json()
    assert body["statusCode"] == 405 and body["error"] == "Method Not Allowed"
    assert "PUT" in body["message"]


def test_500_from_drf_view_hides_details(api):
    response = api.get("/api/v1/test/boom")
    assert response.status_code == 500
    assert response.json() == {"statusCode": 500, "message": "服务器内部错误。", "error": "Internal Server Error"}
    assert b"secret internal detail" not in response.content


def test_500_from_plain_view_is_json_even_in_debug(api, settings):
    settings.DEBUG = True
    api.raise_request_exception = False
    response = api.get("/api/v1/test/plain-boom")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json()["statusCode"] == 500
    assert b"secret internal detail" not in response.content


def test_request_id_is_echoed_or_generated(anon):
    given = anon.get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    assert given["X-Request-ID"] == "abc-123"
    generated = anon.get("/healthz", HTTP_X_REQUEST_ID="bad id with spaces")
    assert len(generated["X-Request-ID"]) == 32


def test_pagination_shape_and_bounds(make_client, user):
    from apps.accounts.services import token_create

    for _ in range(4):
        token_create(user=user)
    client = make_client(user)  # a fifth token
    page = client.get("/api/v1/auth/tokens?page=2&pageSize=2").json()
    assert page["total"] == 5 and page["page"] == 2 and page["pageSize"] == 2 and len(page["items"]) == 2
    beyond = client.get("/api/v1/auth/tokens?page=9&pageSize=2").json()
    assert beyond["items"] == [] and beyond["total"] == 5
    bad = client.get("/api/v1/auth/tokens?pageSize=1000")
    assert bad.status_code == 400 and "pageSize" in bad.json()["details"]


def test_form_encoded_body_is_415_not_500(api):
    response = api.post("/api/v1/test/echo", data="promptId=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["statusCode"] == 415


def test_too_many_form_fields_on_an_upload_endpoint_is_400(api):
    body = "&".join(["entries=null"] * 1500)
    response = api.post("/api/v1/lorebooks/import", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert response.json()["statusCode"] == 400


def test_an_exhausted_connection_pool_is_503_with_retry_after(api, monkeypatch):
    from django.db import OperationalError

    from apps.accounts import api as accounts_api

    class PoolTimeout(Exception):
        pass

    def exhausted(*, user):
        try:
            raise PoolTimeout("couldn't get a connection after 10.00 sec")
        except PoolTimeout as exc:
            raise OperationalError(str(exc)) from exc

    monkeypatch.setattr(accounts_api.selectors, "user_permission_strings", exhausted)
    response = api.get("/api/v1/auth/me")
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json() == {"statusCode": 503, "message": "服务繁忙，请稍后重试。", "error": "Service Unavailable"}
