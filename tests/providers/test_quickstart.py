"""Quick start from LLM_* settings, the offline mock default, and their commands/demo hook."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from apps.providers import services
from apps.providers.diagnostics import run_check
from apps.providers.models import AIModel, Connection
from apps.providers.quickstart import mock_ensure, quickstart_ensure

pytestmark = pytest.mark.django_db

KEY = "sk-quick-SECRET-0123456789abcdef"
QUICK = {
    "LLM_BASE_URL": "http://127.0.0.1:11434/v1",
    "LLM_API_KEY": KEY,
    "LLM_MODELS": ["qwen2.5:7b", "llama3.1", "qwen2.5:7b", " "],
    "DEFAULT_MODEL_ID": "qwen2.5:7b",
}


def models() -> list[tuple[str, str, str, int, int, Decimal, Decimal, bool, bool]]:
    return list(
        AIModel.objects.order_by("model_id").values_list(
            "model_id",
            "upstream_model",
            "display_name",
            "context_tokens",
            "max_output_tokens",
            "input_ratio",
            "output_ratio",
            "is_free",
            "enabled",
        )
    )


@override_settings(**QUICK)
def test_quickstart_creates_the_default_connection_and_models() -> None:
    # when
    lines = quickstart_ensure()

    # then
    assert lines == [
        "Created connection 'default' (openai, http://127.0.0.1:11434/v1, key sk-…cdef).",
        "Created model 'qwen2.5:7b'.",
        "Created model 'llama3.1'.",
    ]
    conn = Connection.objects.get()
    assert (conn.name, conn.kind, conn.base_url, conn.enabled) == ("default", "openai", QUICK["LLM_BASE_URL"], True)
    assert conn.api_key == KEY
    assert KEY not in conn.api_key_encrypted
    assert models() == [
        ("llama3.1", "llama3.1", "llama3.1", 32768, 4096, Decimal("1.00"), Decimal("1.00"), False, True),
        ("qwen2.5:7b", "qwen2.5:7b", "qwen2.5:7b", 32768, 4096, Decimal("1.00"), Decimal("1.00"), False, True),
    ]
    assert all(KEY not in line for line in lines)


@override_settings(**QUICK)
def test_quickstart_is_idempotent_and_mock_stays_out() -> None:
    quickstart_ensure()
    assert quickstart_ensure() == []
    assert mock_ensure() == []
    assert (Connection.objects.count(), AIModel.objects.count()) == (1, 2)


@override_settings(**{**QUICK, "DEFAULT_MODEL_ID": "gpt-4-turbo"})
def test_default_model_not_listed_becomes_an_alias_of_the_first() -> None:
    lines = quickstart_ensure()
    assert (
        lines[-1] == "Created model 'gpt-4-turbo' as an alias of 'qwen2.5:7b' (DEFAULT_MODEL_ID is not in LLM_MODELS)."
    )
    alias = AIModel.objects.get(model_id="gpt-4-turbo")
    assert (alias.upstream_model, alias.display_name, alias.connection.name) == (
        "qwen2.5:7b",
        "qwen2.5:7b (default)",
        "default",
    )
    assert AIModel.objects.count() == 3


@override_settings(**{**QUICK, "LLM_MODELS": [], "LLM_API_KEY": "", "DEFAULT_MODEL_ID": "my-model"})
def test_without_models_or_key() -> None:
    assert quickstart_ensure() == [
        "Created connection 'default' (openai, http://127.0.0.1:11434/v1, no API key).",
        "Created model 'my-model'.",
    ]
    assert Connection.objects.get().api_key_encrypted == ""
    assert [m[:2] for m in models()] == [("my-model", "my-model")]


@override_settings(**QUICK)
def test_quickstart_does_nothing_when_a_connection_exists() -> None:
    services.connection_upsert(name="ops", kind="anthropic")
    assert quickstart_ensure() == []
    assert list(Connection.objects.values_list("name", flat=True)) == ["ops"]
    assert AIModel.objects.count() == 0


@override_settings(LLM_BASE_URL="", DEFAULT_MODEL_ID="gpt-4-turbo")
def test_quickstart_without_base_url_does_nothing_but_mock_does() -> None:
    assert quickstart_ensure() == []
    assert mock_ensure() == [
        "Created connection 'mock' (mock: offline deterministic text) and model 'gpt-4-turbo'.",
        "Set LLM_BASE_URL (and LLM_API_KEY, LLM_MODELS) or run import_models to use a real LLM.",
    ]
    conn = Connection.objects.get()
    assert (conn.name, conn.kind, conn.base_url, conn.api_key_encrypted) == ("mock", "mock", "", "")
    assert models() == [
        ("gpt-4-turbo", "mock", "gpt-4-turbo (mock)", 32768, 4096, Decimal("1.00"), Decimal("1.00"), False, True)
    ]
    assert mock_ensure() == []
    assert AIModel.objects.count() == 1


@override_settings(LLM_BASE_URL="", DEFAULT_MODEL_ID="gpt-4-turbo")
def test_mock_does_nothing_when_a_connection_exists() -> None:
    services.connection_upsert(name="ops", kind="openai", base_url="https://api.openai.com/v1")
    assert mock_ensure() == []
    assert Connection.objects.count() == 1


@override_settings(LLM_BASE_URL="", DEFAULT_MODEL_ID="gpt-4-turbo")
def test_the_mock_model_answers_offline() -> None:
    mock_ensure()
    result = run_check(AIModel.objects.select_related("connection").get(), max_tokens=4)
    assert result.ok
    assert (result.reply, result.finish_reason) == ("【模拟回复】关于「Say hel", "length")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3, 4)


@override_settings(**QUICK)
def test_providers_quickstart_command() -> None:
    out = StringIO()
    call_command("providers_quickstart", stdout=out)
    assert (
        out.getvalue().splitlines()[0]
        == "Created connection 'default' (openai, http://127.0.0.1:11434/v1, key sk-…cdef)."
    )
    out = StringIO()
    call_command("providers_quickstart", stdout=out)
    assert out.getvalue() == "Providers already configured; nothing to do.\n"


@override_settings(LLM_BASE_URL="", DEFAULT_MODEL_ID="gpt-4-turbo")
def test_demo_setup_hook_creates_the_mock_provider() -> None:
    out = StringIO()
    call_command("demo_setup", stdout=out)
    text = out.getvalue()
    assert "Providers: Created connection 'mock' (mock: offline deterministic text) and model 'gpt-4-turbo'." in text
    out = StringIO()
    call_command("demo_setup", stdout=out)
    assert "Providers: 1 connection(s), 1 enabled model(s) already configured." in out.getvalue()


@override_settings(LLM_BASE_URL="", DEFAULT_MODEL_ID="missing-model")
def test_demo_setup_warns_when_the_default_model_is_missing() -> None:
    services.connection_upsert(name="ops", kind="mock")
    out = StringIO()
    call_command("demo_setup", stdout=out)
    assert (
        "Providers: warning: DEFAULT_MODEL_ID='missing-model' is not an enabled model; "
        "requests without modelId will fail."
    ) in out.getvalue()


@override_settings(**QUICK)
def test_quickstart_still_runs_beside_the_apps_own_connections() -> None:
    """After a first `make run` on the local model or the mock, setting LLM_BASE_URL configures it."""
    services.connection_upsert(name="mock", kind="mock")
    services.connection_upsert(name="local", kind="local")
    assert quickstart_ensure()[0] == "Created connection 'default' (openai, http://127.0.0.1:11434/v1, key sk-…cdef)."
    assert sorted(Connection.objects.values_list("name", flat=True)) == ["default", "local", "mock"]
    assert quickstart_ensure() == []
