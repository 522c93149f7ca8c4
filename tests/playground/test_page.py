"""The page as served: HTML with its policy, JavaScript modules with a JavaScript type (a browser refuses
a module otherwise), no third-party URL anywhere (works offline); the `{{参数}}` detection in a browser;
and streaming answers that reach a browser unbuffered and uncompressed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.macros.engine.registry import REGISTRY
from tests.fakes.upstream import Reply

STATIC = Path(__file__).resolve().parents[2] / "apps" / "playground" / "static" / "playground"


@pytest.mark.django_db
def test_the_page_is_served_with_its_policy_and_the_macro_names(client):
    response = client.get("/playground/")

    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    html = response.content.decode()
    names = json.loads(re.search(r'<script id="macro-names" type="application/json">(.*?)</script>', html).group(1))
    assert names == sorted(REGISTRY) and "user" in names and "getvar" in names
    for testid in ("login-username", "login-password", "login-submit", "token-input", "prompt-select", "model-select"):
        assert f'data-testid="{testid}"' in html
    for testid in ("user-input", "generate", "stop", "output", "consumption", "balance", "error"):
        assert f'data-testid="{testid}"' in html
    assert client.post("/playground/").status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(p.name for p in STATIC.iterdir()))
def test_the_static_files_have_the_right_types_and_no_third_party_urls(client, name):
    response = client.get(f"/static/playground/{name}")

    assert response.status_code == 200
    expected = {".js": "text/javascript", ".css": "text/css"}[Path(name).suffix]
    assert response["Content-Type"].startswith(expected)
    body = b"".join(response.streaming_content).decode()
    code = re.sub(r"^\s*//.*$|/\*.*?\*/", "", body, flags=re.MULTILINE | re.DOTALL)  # comments may give examples
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)[\w.-]+\.\w+", code)


def test_parameters_are_found_in_the_prompt_and_built_in_macros_are_not(page, live_server_url, transactional_db):
    page.goto(f"{live_server_url}/playground/")
    found = page.evaluate(
        """async () => {
            const { detectParameters } = await import("/static/playground/params.js");
            const builtins = JSON.parse(document.getElementById("macro-names").textContent);
            return detectParameters(
                ["主角：{{主角名字}}，{{ 故事背景 }}；{{user}} {{char}} {{time}}",
                 "{{主角名字}} {{roll:1d6}} {{getvar::x}} {{// note}} {{time_UTC+8}} {{setting-2}} {{User}}"],
                builtins,
            );
        }"""
    )
    assert found == ["主角名字", "故事背景", "setting-2"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/generation/writing/stream", "writing"),
        ("/api/v1/generation/writing", "writing-stream-flag"),
        ("/v1/chat/completions", "openai"),
    ],
)
def test_streams_are_neither_buffered_nor_compressed(
    live_server_url, fake_upstream, make_model, writing_prompt, token, path, body
):
    make_model()
    fake_upstream.script(Reply(chunks=["一" * 2000, "二" * 2000]))
    payload: dict[str, Any] = {
        "writing": {"promptId": writing_prompt.pk, "parameters": {}, "userInput": "x"},
        "writing-stream-flag": {"promptId": writing_prompt.pk, "userInput": "x", "stream": True},
        "openai": {"model": "gpt-4-turbo", "messages": [{"role": "user", "content": "x"}], "stream": True},
    }[body]
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip, deflate, br"}

    response = httpx.post(live_server_url + path, json=payload, headers=headers, timeout=20)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["cache-control"] == "no-cache"
    assert "content-encoding" not in response.headers
    if body != "openai":  # writing (and roleplay) name their record before the first event
        assert response.headers["x-generation-id"].startswith("gen_")
    assert "一" * 2000 in response.text
