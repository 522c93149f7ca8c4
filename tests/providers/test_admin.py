"""Providers admin (pages, write-only key, fallbacks, diagnostics actions) and `manage.py llm_check`,
against the real fake upstream."""

from __future__ import annotations

import re
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import reverse

from apps.providers import services
from apps.providers.models import AIModel, Connection, ModelFallback
from tests.fakes.fixtures import fake_upstream, fake_upstream_server  # noqa: F401
from tests.fakes.upstream import FakeUpstream, Reply

pytestmark = pytest.mark.django_db

KEY = "sk-admin-SECRET-0123456789abcdef"
OTHER_KEY = "sk-other-SECRET-fedcba9876543210"


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456789")
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client


@pytest.fixture
def conn(fake_upstream: FakeUpstream) -> Connection:  # noqa: F811
    return services.connection_upsert(name="fake", kind="openai", base_url=fake_upstream.base_url, api_key=KEY).obj


@pytest.fixture
def model(conn: Connection) -> AIModel:
    return services.model_upsert(
        model_id="m1", connection=conn, upstream_model="fake-model", context_tokens=8192, max_output_tokens=1024
    ).obj


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def connection_form(conn: Connection, **overrides: str) -> dict[str, str]:
    data = {
        "name": conn.name,
        "kind": conn.kind,
        "base_url": conn.base_url,
        "enabled": "on",
        "api_key": "",
        "extra_headers": "{}",
        "connect_timeout": "10",
        "read_timeout": "120",
        "max_concurrency": "32",
        "prompt_post_processing": "none",
        "instruct_template": "",
        "custom_instruct_template": "",
        "models-TOTAL_FORMS": "0",
        "models-INITIAL_FORMS": "0",
        "models-MIN_NUM_FORMS": "0",
        "models-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def model_form(model: AIModel, fallbacks: list[AIModel]) -> dict[str, str]:
    data = {
        "model_id": model.model_id,
        "display_name": model.display_name,
        "connection": str(model.connection_id),
        "upstream_model": model.upstream_model,
        "context_tokens": str(model.context_tokens),
        "max_output_tokens": str(model.max_output_tokens),
        "input_ratio": str(model.input_ratio),
        "output_ratio": str(model.output_ratio),
        "enabled": "on",
        "fallback_links-TOTAL_FORMS": str(len(fallbacks)),
        "fallback_links-INITIAL_FORMS": "0",
        "fallback_links-MIN_NUM_FORMS": "0",
        "fallback_links-MAX_NUM_FORMS": "1000",
    }
    for index, fallback in enumerate(fallbacks):
        data[f"fallback_links-{index}-position"] = str(index)
        data[f"fallback_links-{index}-fallback"] = str(fallback.pk)
        data[f"fallback_links-{index}-model"] = str(model.pk)
    return data


# ---------------------------------------------------------------------------------------------
# Pages


def test_pages_render_and_never_show_the_key(staff: Client, conn: Connection, model: AIModel) -> None:
    pages = [
        reverse("admin:providers_connection_changelist"),
        reverse("admin:providers_connection_add"),
        reverse("admin:providers_connection_change", args=[conn.pk]),
        reverse("admin:providers_aimodel_changelist"),
        reverse("admin:providers_aimodel_add"),
        reverse("admin:providers_aimodel_change", args=[model.pk]),
        reverse("admin:providers_connection_changelist") + "?q=fake&kind__exact=openai",
    ]
    for page in pages:
        response = staff.get(page)
        html = response.content.decode()
        assert response.status_code == 200, page
        assert KEY not in html, page
        assert conn.api_key_encrypted not in html, page
    html = staff.get(reverse("admin:providers_connection_change", args=[conn.pk])).content.decode()
    assert "sk-…cdef" in html
    assert re.search(r'<input type="password" name="api_key"[^>]*>', html)
    assert not re.search(r'<input type="password" name="api_key"[^>]*value=', html)
    assert "sk-…cdef" in staff.get(reverse("admin:providers_connection_changelist")).content.decode()


def test_blank_key_keeps_the_stored_key(staff: Client, conn: Connection) -> None:
    response = staff.post(reverse("admin:providers_connection_change", args=[conn.pk]), connection_form(conn))
    assert response.status_code == 302
    conn.refresh_from_db()
    assert (conn.api_key, conn.api_key_hint) == (KEY, "sk-…cdef")


def test_a_new_key_replaces_the_stored_key(staff: Client, conn: Connection) -> None:
    response = staff.post(
        reverse("admin:providers_connection_change", args=[conn.pk]), connection_form(conn, api_key=OTHER_KEY)
    )
    assert response.status_code == 302
    conn.refresh_from_db()
    assert (conn.api_key, conn.api_key_hint) == (OTHER_KEY, "sk-…3210")
    assert OTHER_KEY not in conn.api_key_encrypted


def test_the_clear_checkbox_removes_the_key(staff: Client, conn: Connection) -> None:
    response = staff.post(
        reverse("admin:providers_connection_change", args=[conn.pk]), connection_form(conn, clear_api_key="on")
    )
    assert response.status_code == 302
    conn.refresh_from_db()
    assert (conn.api_key_encrypted, conn.api_key_hint) == ("", "")


def test_add_a_connection_with_a_key(staff: Client) -> None:
    template = Connection(name="new", kind="anthropic", base_url="https://api.anthropic.com")
    response = staff.post(reverse("admin:providers_connection_add"), connection_form(template, api_key=KEY))
    assert response.status_code == 302
    created = Connection.objects.get(name="new")
    assert (created.kind, created.api_key, created.api_key_hint) == ("anthropic", KEY, "sk-…cdef")


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"base_url": "ftp://example.com"}, "base_url", "must start with http:// or https://"),
        ({"instruct_template": "chatml"}, "instruct_template", "is only used by openai_text connections"),
        (
            {"kind": "openai_text", "instruct_template": "custom"},
            "custom_instruct_template",
            "is required when instruct_template is 'custom'",
        ),
        ({"api_key": OTHER_KEY, "clear_api_key": "on"}, "clear_api_key", "Either enter a new key or clear"),
    ],
)
def test_invalid_connection_forms_change_nothing(
    staff: Client, conn: Connection, overrides: dict[str, str], field: str, message: str
) -> None:
    before = Connection.objects.filter(pk=conn.pk).values().get()
    response = staff.post(
        reverse("admin:providers_connection_change", args=[conn.pk]), connection_form(conn, **overrides)
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field])
    assert OTHER_KEY not in response.content.decode()
    assert Connection.objects.filter(pk=conn.pk).values().get() == before


def test_fallbacks_are_edited_inline_and_loops_are_refused(staff: Client, conn: Connection, model: AIModel) -> None:
    # given m1 → m2
    m2 = services.model_upsert(model_id="m2", connection=conn, upstream_model="fake-model-2").obj
    m3 = services.model_upsert(model_id="m3", connection=conn, upstream_model="fake-model-3").obj
    response = staff.post(reverse("admin:providers_aimodel_change", args=[model.pk]), model_form(model, [m3, m2]))
    assert response.status_code == 302
    assert list(model.fallback_links.values_list("fallback__model_id", "position")) == [("m3", 0), ("m2", 1)]

    # when m2 → m1 is attempted
    response = staff.post(reverse("admin:providers_aimodel_change", args=[m2.pk]), model_form(m2, [model]))

    # then
    assert response.status_code == 200
    assert "fallbacks would form a loop: m2 → m1 → m2" in response.content.decode()
    assert ModelFallback.objects.filter(model=m2).count() == 0


def test_ratios_are_editable_in_the_list(staff: Client, model: AIModel) -> None:
    data = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "form-0-id": str(model.pk),
        "form-0-input_ratio": "2.5",
        "form-0-output_ratio": "0.75",
        "form-0-enabled": "on",
        "_save": "Save",
    }
    response = staff.post(reverse("admin:providers_aimodel_changelist"), data)
    assert response.status_code == 302
    model.refresh_from_db()
    assert (model.input_ratio, model.output_ratio, model.is_free, model.enabled) == (
        Decimal("2.50"),
        Decimal("0.75"),
        False,
        True,
    )


# ---------------------------------------------------------------------------------------------
# Actions


def test_fetch_model_list(staff: Client, conn: Connection, model: AIModel, fake_upstream: FakeUpstream) -> None:  # noqa: F811
    response = staff.post(
        reverse("admin:providers_connection_changelist"),
        {"action": "fetch_model_list", "_selected_action": [conn.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert texts(response) == ["fake: 2 models: fake-model, fake-model-2 — not configured yet: fake-model-2"]
    request = fake_upstream.requests[-1]
    assert (request.method, request.path, request.headers["authorization"]) == ("GET", "/v1/models", f"Bearer {KEY}")
    assert KEY not in response.content.decode()


def test_fetch_model_list_failure_is_a_clear_message(staff: Client) -> None:
    down = services.connection_upsert(name="down", kind="openai", base_url="http://127.0.0.1:9", api_key=KEY).obj
    response = staff.post(
        reverse("admin:providers_connection_changelist"),
        {"action": "fetch_model_list", "_selected_action": [down.pk]},
        follow=True,
    )
    [message] = texts(response)
    assert message.startswith("down: fetching the model list failed: OpenAI-compatible upstream: could not connect")
    assert KEY not in response.content.decode()


def test_send_test_message(staff: Client, model: AIModel, fake_upstream: FakeUpstream) -> None:  # noqa: F811
    fake_upstream.script(Reply(chunks=["Hello", "!"], usage=(9, 2)))
    response = staff.post(
        reverse("admin:providers_aimodel_changelist"),
        {"action": "send_test_message", "_selected_action": [model.pk]},
        follow=True,
    )
    [message] = texts(response)
    assert re.fullmatch(r"m1: reply “Hello!” in \d+ ms, finish reason stop, usage 9 \+ 2 = 11 tokens", message), message
    body = fake_upstream.completion_requests[-1].json
    assert (body["model"], body["max_tokens"], body["stream"]) == ("fake-model", 32, False)
    assert body["messages"] == [{"role": "user", "content": "Say hello"}]
    assert fake_upstream.completion_requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_send_test_message_shows_the_error_without_the_key(
    staff: Client,
    model: AIModel,
    fake_upstream: FakeUpstream,  # noqa: F811
) -> None:
    fake_upstream.script(Reply.error(401, f"Incorrect API key provided: {KEY}", type="invalid_request_error"))
    response = staff.post(
        reverse("admin:providers_aimodel_changelist"),
        {"action": "send_test_message", "_selected_action": [model.pk]},
        follow=True,
    )
    [message] = texts(response)
    assert re.fullmatch(
        r"m1: the test message failed after \d+ ms: .*HTTP 401.*Incorrect API key provided: \*\*\*", message
    ), message
    assert KEY not in response.content.decode()


def test_undecryptable_key_is_reported_not_crashed(staff: Client, model: AIModel) -> None:
    with override_settings(FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode()):
        response = staff.post(
            reverse("admin:providers_aimodel_changelist"),
            {"action": "send_test_message", "_selected_action": [model.pk]},
            follow=True,
        )
        assert staff.get(reverse("admin:providers_connection_changelist")).status_code == 200
    [message] = texts(response)
    assert message == (
        "m1: the test message failed after 0 ms: the stored API key cannot be decrypted with FIELD_ENCRYPTION_KEY"
    )


# ---------------------------------------------------------------------------------------------
# llm_check


SCOPE = "" if settings.REDIS_URL else " [this process's view: without REDIS_URL each process keeps its own]"


def llm_check(*args: str) -> list[str]:
    out = StringIO()
    call_command("llm_check", *args, stdout=out)
    return out.getvalue().splitlines()


def test_llm_check(model: AIModel, fake_upstream: FakeUpstream) -> None:  # noqa: F811
    fake_upstream.script(Reply(chunks=["Hi", " there"], usage=(7, 2)))
    lines = llm_check("m1", "--prompt", "Bonjour")
    assert lines[0] == "model m1 → fake (openai) upstream 'fake-model'"
    assert lines[1] == "circuit: healthy" + SCOPE
    assert lines[2] == "reply: Hi there"
    assert re.fullmatch(r"latency: \d+ ms", lines[3])
    assert lines[4:] == ["finish reason: stop", "usage 7 prompt + 2 completion = 9 tokens", "OK"]
    assert fake_upstream.completion_requests[-1].json["messages"] == [{"role": "user", "content": "Bonjour"}]


def test_llm_check_stream(model: AIModel, fake_upstream: FakeUpstream) -> None:  # noqa: F811
    fake_upstream.script(Reply(chunks=["Hel", "lo"], usage=(5, 2), finish="length"))
    lines = llm_check("m1", "--stream", "--max-tokens", "2")
    assert lines[2] == "reply: Hello"
    assert re.fullmatch(r"latency: \d+ ms", lines[3])
    assert re.fullmatch(r"first token: \d+ ms", lines[4])
    assert lines[5:] == ["finish reason: length", "usage 5 prompt + 2 completion = 7 tokens", "OK"]
    body = fake_upstream.completion_requests[-1].json
    assert (body["stream"], body["max_tokens"]) == (True, 2)


def test_llm_check_failure_exits_1(model: AIModel, fake_upstream: FakeUpstream) -> None:  # noqa: F811
    fake_upstream.script(Reply.error(500, "upstream exploded"))
    with pytest.raises(CommandError) as info:
        llm_check("m1")
    assert info.value.returncode == 1
    assert re.fullmatch(r"FAILED after \d+ ms: .*HTTP 500.*upstream exploded", str(info.value)), str(info.value)


def test_llm_check_unknown_model(model: AIModel) -> None:
    with pytest.raises(CommandError) as info:
        llm_check("nope")
    assert str(info.value) == "unknown model 'nope' (known: m1)"


def test_llm_check_time_limit(model: AIModel, fake_upstream: FakeUpstream) -> None:  # noqa: F811
    fake_upstream.script(Reply(latency=3.0))
    with pytest.raises(CommandError) as info:
        llm_check("m1", "--timeout", "0.3")
    assert info.value.returncode == 1
    assert re.fullmatch(r"FAILED after \d+ ms: no complete answer within 0.3 s", str(info.value)), str(info.value)
