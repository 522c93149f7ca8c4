"""`GET /api/v1/models`: enabled models on enabled connections, public fields only."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from django.test import override_settings
from django.urls import include, path
from rest_framework.test import APIClient

from apps.providers import services
from apps.providers.models import AIModel, Connection
from writing_service import urls as project_urls

# The project's URLs with this app's routes (the lead adds the include to writing_service/urls.py;
# listing them first here keeps the tests independent of that).
urlpatterns = [path("api/v1/", include("apps.providers.urls")), *project_urls.urlpatterns]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

KEY = "sk-live-SECRET-0123456789abcdef"
URL = "/api/v1/models"


@pytest.fixture
def catalog() -> dict[str, AIModel]:
    live = services.connection_upsert(
        name="deepseek-conn", kind="openai", base_url="https://api.deepseek.com/v1", api_key=KEY
    ).obj
    off = services.connection_upsert(
        name="retired-conn", kind="openai", base_url="https://old.example.com/v1", enabled=False
    ).obj
    models = {
        "gpt-4-turbo": services.model_upsert(
            model_id="gpt-4-turbo",
            connection=live,
            upstream_model="upstream-gpt-4-x",
            display_name="GPT-4 Turbo",
            context_tokens=128000,
            max_output_tokens=4096,
            input_ratio=Decimal("1.5"),
            output_ratio=2,
        ).obj,
        "deepseek-chat": services.model_upsert(
            model_id="deepseek-chat",
            connection=live,
            upstream_model="deepseek-chat-upstream",
            context_tokens=65536,
            max_output_tokens=8192,
            input_ratio="0.25",
            output_ratio=1,
            is_free=True,
        ).obj,
        "disabled-model": services.model_upsert(
            model_id="disabled-model", connection=live, upstream_model="x", enabled=False
        ).obj,
        "on-disabled-connection": services.model_upsert(
            model_id="on-disabled-connection", connection=off, upstream_model="y"
        ).obj,
    }
    return models


def test_lists_enabled_models_on_enabled_connections(api: APIClient, catalog: dict[str, AIModel]) -> None:
    # when
    response = api.get(URL)

    # then
    assert response.status_code == 200
    assert orjson.loads(response.content) == {
        "items": [
            {
                "modelId": "deepseek-chat",
                "displayName": "deepseek-chat",
                "contextTokens": 65536,
                "maxOutputTokens": 8192,
                "inputRatio": 0.25,
                "outputRatio": 1,
                "isFree": True,
                "isDefault": False,
            },
            {
                "modelId": "gpt-4-turbo",
                "displayName": "GPT-4 Turbo",
                "contextTokens": 128000,
                "maxOutputTokens": 4096,
                "inputRatio": 1.5,
                "outputRatio": 2,
                "isFree": False,
                "isDefault": True,
            },
        ],
        "total": 2,
        "page": 1,
        "pageSize": 20,
    }


def test_no_secrets_or_routing_details_in_the_body(api: APIClient, catalog: dict[str, AIModel]) -> None:
    body = api.get(URL).content.decode()
    for secret in (
        KEY,
        Connection.objects.get(name="deepseek-conn").api_key_hint,
        Connection.objects.get(name="deepseek-conn").api_key_encrypted,
        "deepseek-conn",
        "api.deepseek.com",
        "upstream-gpt-4-x",
        "deepseek-chat-upstream",
        "disabled-model",
        "on-disabled-connection",
    ):
        assert secret not in body


@override_settings(DEFAULT_MODEL_ID="deepseek-chat")
def test_is_default_follows_the_setting(api: APIClient, catalog: dict[str, AIModel]) -> None:
    items = orjson.loads(api.get(URL).content)["items"]
    assert [(item["modelId"], item["isDefault"]) for item in items] == [("deepseek-chat", True), ("gpt-4-turbo", False)]


def test_pagination(api: APIClient, catalog: dict[str, AIModel]) -> None:
    body = orjson.loads(api.get(URL, {"page": 2, "pageSize": 1}).content)
    assert [item["modelId"] for item in body["items"]] == ["gpt-4-turbo"]
    assert (body["total"], body["page"], body["pageSize"]) == (2, 2, 1)


def test_invalid_page_size_is_a_validation_error(make_client, user, catalog: dict[str, AIModel]) -> None:
    response = make_client(user, language="en").get(URL, {"pageSize": 0})
    assert response.status_code == 400
    body = orjson.loads(response.content)
    assert (body["statusCode"], body["error"]) == (400, "Bad Request")
    assert list(body["details"]) == ["pageSize"]


def test_empty_catalog(api: APIClient) -> None:
    assert orjson.loads(api.get(URL).content) == {"items": [], "total": 0, "page": 1, "pageSize": 20}


def test_anonymous_gets_401(anon: APIClient, catalog: dict[str, AIModel]) -> None:
    response = anon.get(URL)
    assert response.status_code == 401
    body = orjson.loads(response.content)
    assert (body["statusCode"], body["error"]) == (401, "Unauthorized")
    assert "gpt-4-turbo" not in response.content.decode()
