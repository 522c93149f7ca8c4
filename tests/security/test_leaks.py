"""Issue 20, item 12: the upstream's own error text (which can name the upstream model, hosts, accounts)
never reaches clients — answers, streams and records say a generic message, operators see the details —
and extra request headers (often credentials) are encrypted at rest and masked in the admin."""

from __future__ import annotations

import orjson
import pytest
from django.db import connection

from apps.billing.services import wallet_grant
from apps.generation.models import Generation
from apps.providers.models import Connection
from tests.fakes.upstream import Reply
from tests.generation.conftest import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_TEXT = "model up-internal-llm-70b unavailable on gpu-node-7.corp.example:8443 for org acme"


@pytest.fixture(autouse=True)
def funds(user):
    wallet_grant(user=user, amount=10_000)


def test_upstream_error_text_stays_with_operators(http, fake_upstream, make_model, writing_prompt, token):
    make_model(upstream="up-internal-llm-70b")
    fake_upstream.script(
        *[Reply.error(400, SECRET_TEXT)] * 2, *[Reply(chunks=["x"], stream_error={"message": SECRET_TEXT})] * 1
    )
    body = {"promptId": writing_prompt.pk, "maxTokens": 10}

    answers = [
        http.post("/api/v1/generation/writing", json=body),
        http.post(
            "/v1/chat/completions", json={"model": "gpt-4-turbo", "messages": [{"role": "user", "content": "hi"}]}
        ),
    ]
    streamed = http.post("/api/v1/generation/writing/stream", json=body)

    for answer in answers:
        assert answer.status_code == 502
        assert "up-internal" not in answer.text and "corp.example" not in answer.text
    assert "up-internal" not in streamed.text and "corp.example" not in streamed.text
    assert orjson.loads(sse_events(streamed.text)[-2])["error"]["statusCode"] == 502
    for record in Generation.objects.all():
        listed = http.get(f"/api/v1/generations/{record.public_id}").text
        assert "up-internal" not in listed and "corp.example" not in listed
        assert "corp.example" in record.error_message  # for operators (admin)


def test_extra_headers_are_encrypted_at_rest_and_masked(make_model, admin_client_for):
    model = make_model()
    conn = model.connection
    conn.extra_headers = {"api-key": "azure-secret-0123456789", "X-Title": "writer"}
    conn.save()

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM providers_connection WHERE id = %s", [conn.pk])
        row = " ".join(str(v) for v in cursor.fetchone())
    assert "azure-secret" not in row
    fresh = Connection.objects.get(pk=conn.pk)
    assert fresh.extra_headers == {"api-key": "azure-secret-0123456789", "X-Title": "writer"}
    assert fresh.config().extra_headers["api-key"] == "azure-secret-0123456789"
    assert "azure-secret" not in fresh.extra_headers_hint and "api-key: azu…6789" in fresh.extra_headers_hint
    page = admin_client_for().get(f"/admin/providers/connection/{conn.pk}/change/")
    assert page.status_code == 200 and b"azure-secret" not in page.content and b"azu\xe2\x80\xa66789" in page.content


@pytest.fixture
def admin_client_for(make_user):
    from django.test import Client

    def make():
        admin = make_user("root", is_staff=True)
        admin.is_superuser = True
        admin.save()
        client = Client()
        client.force_login(admin)
        return client

    return make
