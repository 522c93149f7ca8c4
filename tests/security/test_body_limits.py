"""Issue 20, item 2: request bodies over the limit are a 413 before they are read whole.

Before: the JSON parser read the stream whole, bypassing `DATA_UPLOAD_MAX_MEMORY_SIZE` — a 200 MB
generation request answered after 46 s at 6.8 GB RSS (on this machine, 50 MB of small history
messages: +724 MiB; a chunked body was spooled to disk whole). Now `API_BODY_MAX_BYTES` (8 MiB) is
checked by the ASGI handlers on the declared `Content-Length` before anything is read, and on the
bytes received for a chunked body; the JSON parser checks it again for every other way in.
"""

from __future__ import annotations

import json
import struct
import zlib

import httpx
import pytest

from tests.security.bounds import HealthProbe, measure, raw_request

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024
WRITING = "/api/v1/generation/writing"


@pytest.fixture
def token(user):
    from apps.accounts.services import token_create

    return token_create(user=user).token


def _head(path: str, token: str, *, length: int | None = None, content_type: str = "application/json") -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: testserver", f"Authorization: Bearer {token}"]
    lines.append(f"Content-Type: {content_type}")
    lines.append("Accept-Language: en")
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return "\r\n".join(lines)


def _megabytes(count: int, piece: bytes = b" " * MIB):
    for _ in range(count):
        yield piece


def _chunked(count: int, size: int = 64 * 1024):
    piece = b"%x\r\n" % size + b"[" * size + b"\r\n"
    for _ in range(count):
        yield piece
    yield b"0\r\n\r\n"


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(live_server_url, token, settings):
    """The 200 MB generation request of the issue: 413 at once, the body never read."""
    with measure() as cost:
        answer = raw_request(live_server_url, _head(WRITING, token, length=200 * MIB), _megabytes(200))
    assert answer.status == 413
    body = json.loads(answer.body)
    assert body == {
        "statusCode": 413,
        "message": "The request body is larger than 8 MB.",
        "error": "Content Too Large",
        "limitBytes": settings.API_BODY_MAX_BYTES,
    }
    assert answer.headers["connection"] == "close"
    assert answer.sent < 64 * MIB  # the answer came while the client was still sending
    assert cost.seconds < 6 and cost.rss_peak_mib < 64


def test_a_chunked_body_is_counted_while_read_and_refused_past_the_limit(live_server_url, token, settings):
    settings.API_BODY_MAX_BYTES = MIB
    with HealthProbe(live_server_url) as health, measure() as cost:
        answer = raw_request(live_server_url, _head(WRITING, token), _chunked(4096))  # 256 MiB offered
    assert answer.status == 413 and json.loads(answer.body)["limitBytes"] == MIB
    assert answer.sent < 64 * MIB
    assert cost.seconds < 15 and cost.rss_peak_mib < 64
    assert health.failures == 0 and health.worst < 1.0, health.times


def test_the_openai_compatible_api_answers_in_its_own_error_shape(live_server_url, token):
    answer = raw_request(live_server_url, _head("/v1/chat/completions", token, length=50 * MIB), _megabytes(50))
    assert answer.status == 413
    assert json.loads(answer.body) == {
        "error": {
            "message": "The request body is larger than 8 MB.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }


def test_the_message_is_in_the_clients_language(live_server_url, token):
    head = _head(WRITING, token, length=20 * MIB).replace("Accept-Language: en", "Accept-Language: zh-hans")
    answer = raw_request(live_server_url, head, _megabytes(20))
    assert answer.status == 413 and json.loads(answer.body)["message"] == "请求体超过 8 MB。"


def test_a_body_within_the_limit_is_served(live_server_url, token, settings):
    settings.API_BODY_MAX_BYTES = MIB
    body = {"text": "{{user}}", "pad": "x" * (MIB - 1000)}
    response = httpx.post(
        f"{live_server_url}/api/v1/macros/preview", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200 and response.json() == {"result": "alice"}


def test_other_paths_have_djangos_limit(live_server_url, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = MIB
    head = "POST /admin/login/ HTTP/1.1\r\nHost: testserver\r\nContent-Type: application/x-www-form-urlencoded"
    answer = raw_request(live_server_url, f"{head}\r\nContent-Length: {100 * MIB}", _megabytes(100))
    assert answer.status == 413 and json.loads(answer.body)["limitBytes"] == MIB


def _png_card(padding: int) -> bytes:
    from apps.cards import export_card_png, minimal_png, parse_card_json

    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Big", "first_mes": "Hi"}}
    base = minimal_png()
    filler = b"\0" * padding  # an ancillary chunk the codec keeps as it is
    crc = zlib.crc32(filler, zlib.crc32(b"zzZz"))
    chunk = struct.pack(">I", len(filler)) + b"zzZz" + filler + struct.pack(">I", crc)
    base = base[:-12] + chunk + base[-12:]
    return export_card_png(parse_card_json(card).card_v3, card, base)


def test_uploads_keep_their_own_larger_limit(live_server_url, token, settings):
    settings.API_BODY_MAX_BYTES = 256 * 1024
    settings.CARD_MAX_BYTES = 2 * MIB
    png = _png_card(MIB)
    response = httpx.post(
        f"{live_server_url}/api/v1/characters/import",
        files={"file": ("big.png", png, "image/png")},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Big"
    head = _head("/api/v1/characters/import", token, length=8 * MIB, content_type="multipart/form-data; boundary=x")
    answer = raw_request(live_server_url, head, _megabytes(8))
    assert answer.status == 413 and json.loads(answer.body)["limitBytes"] == 3 * MIB


def test_the_parser_checks_the_limit_too(api, settings):
    """Without the ASGI handlers (WSGI, the test client) the JSON parser refuses the body."""
    settings.API_BODY_MAX_BYTES = 1000
    response = api.post("/api/v1/macros/preview", {"text": "x" * 2000}, format="json", HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 413
    assert response.json() == {
        "statusCode": 413,
        "message": "The request body is larger than 1000 bytes.",
        "error": "Content Too Large",
        "limitBytes": 1000,
    }
