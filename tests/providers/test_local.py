"""The `local` connection kind: registration from LLM_PROVIDER=local (context from the GGUF), the mock
fallback, validation, admin, start-up, and generation through the live server — 503 with Retry-After
while the model loads, then answers. The server is the stand-in of tests/fakes/local_server.py (the real
process protocol, a tiny HTTP server instead of llama.cpp); the real model is in
tests/generation/test_local_model_e2e.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from apps.providers import services
from apps.providers.diagnostics import run_check
from apps.providers.localmodel import manager
from apps.providers.models import AIModel, Connection
from apps.providers.quickstart import local_ensure, mock_ensure, providers_ensure, quickstart_on_startup
from tests.fakes.local_server import REPLY, set_mode

pytestmark = pytest.mark.django_db


def test_local_provider_registers_the_connection_and_its_model(local_stand_in) -> None:
    local = local_stand_in
    # when
    lines = local_ensure()

    # then
    assert lines == [
        f"Created connection 'local' (local: a llama.cpp server this app starts and stops, serving {local}).",
        "Created model 'local-smollm2' (Tiny Instruct, context 4096 tokens).",
    ]
    conn = Connection.objects.get()
    assert (conn.name, conn.kind, conn.base_url, conn.api_key_encrypted, conn.enabled) == (
        "local",
        "local",
        "",
        "",
        True,
    )
    model = AIModel.objects.get()
    assert (model.model_id, model.upstream_model, model.display_name) == (
        "local-smollm2",
        "local",
        "Tiny Instruct (local)",
    )
    assert (model.context_tokens, model.max_output_tokens) == (4096, 2048)
    assert (model.input_ratio, model.output_ratio, model.is_free) == (Decimal("1.00"), Decimal("1.00"), False)
    spec = conn.config().options["spec"]
    assert (spec.model_path, spec.context, spec.alias) == (local_stand_in, 4096, "local")
    # idempotent, and the mock stays out
    assert providers_ensure() == []
    assert (Connection.objects.count(), AIModel.objects.count()) == (1, 1)


def test_local_model_is_created_beside_existing_connections_but_never_changed(local_stand_in) -> None:
    services.connection_upsert(name="ops", kind="openai", base_url="https://api.deepseek.com")
    assert len(local_ensure()) == 2
    AIModel.objects.filter(model_id="local-smollm2").update(max_output_tokens=100)
    assert local_ensure() == []
    assert AIModel.objects.get(model_id="local-smollm2").max_output_tokens == 100


@pytest.mark.parametrize(("provider", "base_url"), [("", ""), ("mock", ""), ("local", "https://api.deepseek.com")])
def test_only_llm_provider_local_without_base_url_registers_it(local_stand_in, settings, provider, base_url) -> None:
    settings.LLM_PROVIDER = provider
    settings.LLM_BASE_URL = base_url
    assert local_ensure() == []
    assert not Connection.objects.filter(kind="local").exists()


def test_without_llama_cpp_it_says_so_and_demo_setup_falls_back_to_mock(local_stand_in, monkeypatch) -> None:
    monkeypatch.setattr("apps.providers.local.llama_cpp_installed", lambda: False)
    out = StringIO()
    call_command("demo_setup", stdout=out)
    text = out.getvalue()
    assert (
        "Providers: The local model cannot run here: llama.cpp (xllamacpp) is not installed; "
        "run scripts/install-local-model."
    ) in text
    assert "Providers: Created connection 'mock' (mock: offline deterministic text) and model 'local-smollm2'." in text
    assert list(Connection.objects.values_list("kind", flat=True)) == ["mock"]


def test_an_unreadable_model_file_is_named(local_stand_in, settings, tmp_path) -> None:
    settings.LOCAL_MODEL_PATH = str(tmp_path / "missing.gguf")
    assert local_ensure() == [
        f"The local model cannot run here: {tmp_path / 'missing.gguf'} is not a readable GGUF model file."
    ]
    assert not Connection.objects.exists()


def test_explicit_mock_is_added_beside_the_local_model(local_stand_in, settings) -> None:
    local_ensure()
    settings.LLM_PROVIDER = "mock"
    settings.DEFAULT_MODEL_ID = "gpt-4-turbo"
    assert mock_ensure()[0] == "Created connection 'mock' (mock: offline deterministic text) and model 'gpt-4-turbo'."
    assert sorted(Connection.objects.values_list("kind", flat=True)) == ["local", "mock"]
    assert mock_ensure() == []


def test_a_local_connection_takes_no_base_url() -> None:
    with pytest.raises(ValidationError) as info:
        services.connection_upsert(name="l", kind="local", base_url="http://127.0.0.1:8080")
    assert info.value.messages == ["must be empty for a local connection (the app runs its own server)"]
    assert not Connection.objects.exists()


def test_demo_setup_prints_a_curl_line_for_the_local_model(local_stand_in) -> None:
    out = StringIO()
    call_command("demo_setup", "--base-url", "http://127.0.0.1:8123", stdout=out)
    lines = out.getvalue().splitlines()
    assert "Providers: Created model 'local-smollm2' (Tiny Instruct, context 4096 tokens)." in lines
    [curl] = [line for line in lines if "/v1/chat/completions" in line]
    assert curl.strip().startswith('curl -s http://127.0.0.1:8123/v1/chat/completions -H "Authorization: Bearer wst_')
    assert '"model": "local-smollm2"' in curl and '"max_tokens": 120' in curl


def test_the_admin_shows_and_edits_a_local_connection(local_stand_in) -> None:
    local_ensure()
    staff = Client(headers={"accept-language": "en"})
    staff.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456789"))
    changelist = staff.get(reverse("admin:providers_connection_changelist"))
    assert changelist.status_code == 200
    assert "Local model (llama.cpp server run by the app)" in changelist.content.decode()
    conn = Connection.objects.get()
    page = staff.get(reverse("admin:providers_connection_change", args=[conn.pk]))
    assert page.status_code == 200 and "local-smollm2" in page.content.decode()
    form = {
        "name": "local",
        "kind": "local",
        "base_url": "http://127.0.0.1:9",
        "connect_timeout": "10",
        "read_timeout": "300",
        "max_concurrency": "8",
        "prompt_post_processing": "none",
        "enabled": "on",
        "models-TOTAL_FORMS": "0",
        "models-INITIAL_FORMS": "0",
    }
    refused = staff.post(reverse("admin:providers_connection_change", args=[conn.pk]), form)
    assert refused.status_code == 200
    assert "must be empty for a local connection" in refused.content.decode()
    saved = staff.post(reverse("admin:providers_connection_change", args=[conn.pk]), {**form, "base_url": ""})
    assert saved.status_code == 302
    assert Connection.objects.get().max_concurrency == 8


def test_start_up_registers_and_starts_loading_without_waiting(local_stand_in) -> None:
    set_mode(local_stand_in, "loading")
    quickstart_on_startup()
    server = manager.local_server(Connection.objects.get().config().options["spec"])
    deadline = time.monotonic() + 10
    while server.state().port is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.state().alive
    assert AIModel.objects.filter(model_id="local-smollm2").exists()


def test_default_model_follows_llm_provider() -> None:
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEFAULT_MODEL_ID)"
    base = {**os.environ, "DJANGO_SETTINGS_MODULE": "writing_service.settings", "ENV_FILE": "/nonexistent"}
    base.pop("DEFAULT_MODEL_ID", None)
    for env, expected in [
        ({"LLM_PROVIDER": "local"}, "local-smollm2"),
        ({"LLM_PROVIDER": "local", "LLM_BASE_URL": "https://api.deepseek.com"}, "gpt-4-turbo"),
        ({"LLM_PROVIDER": "mock"}, "gpt-4-turbo"),
        ({"LLM_PROVIDER": "local", "DEFAULT_MODEL_ID": "mine"}, "mine"),
    ]:
        out = subprocess.run(
            [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == expected, env


@pytest.mark.django_db(transaction=True)
def test_start_up_inside_an_event_loop(local_stand_in) -> None:
    """`uvicorn --workers N` imports the application inside its event loop: the start-up must not
    touch the database from it (Django raises SynchronousOnlyOperation there)."""

    async def import_the_app() -> None:
        quickstart_on_startup()

    asyncio.run(import_the_app())
    assert AIModel.objects.filter(model_id="local-smollm2", connection__kind="local").exists()


def test_diagnostics_wait_while_the_model_loads(local_stand_in) -> None:
    """`llm_check` and the admin's test message on a local model just started: they wait for it."""
    local_ensure()
    set_mode(local_stand_in, "loading")
    flip = threading.Timer(1.0, set_mode, (local_stand_in, "ready"))
    flip.start()
    result = run_check(AIModel.objects.select_related("connection").get(), time_limit=30)
    flip.join()
    assert (result.ok, result.reply, result.error) == (True, REPLY, "")
