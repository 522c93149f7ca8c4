import pytest

pytestmark = pytest.mark.django_db


def test_preview_expands_parameters_names_and_macros(api):
    response = api.post(
        "/api/v1/macros/preview",
        {
            "text": "{{主角名字}}对{{char}}说：你好，{{user}}！{{// 注释}}{{reverse::abc}}",
            "parameters": {"主角名字": "李明"},
            "char": "小红",
        },
        format="json",
    )
    assert response.status_code == 200
    assert response.json() == {"result": "李明对小红说：你好，alice！cba"}


def test_parameter_values_are_inserted_literally(api):
    body = {"text": "{{a}}", "parameters": {"a": "{{user}}", "n": 3}}
    assert api.post("/api/v1/macros/preview", body, format="json").json() == {"result": "{{user}}"}


def test_seeded_pick_is_stable(api):
    body = {"text": "{{pick::甲::乙::丙::丁}}", "seed": "chat-1"}
    results = {api.post("/api/v1/macros/preview", body, format="json").json()["result"] for _ in range(5)}
    assert len(results) == 1 and results <= {"甲", "乙", "丙", "丁"}


def test_validation_and_auth(api, anon):
    response = api.post("/api/v1/macros/preview", {"parameters": {"x": [1]}}, format="json")
    assert response.status_code == 400
    assert set(response.json()["details"]) == {"text", "parameters.x"}
    assert anon.post("/api/v1/macros/preview", {"text": "x"}, format="json").status_code == 401
