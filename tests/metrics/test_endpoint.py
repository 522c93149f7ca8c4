"""`/metrics` in this process: exact counts after known traffic, the token, and what it never shows."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.billing.models import Hold
from tests.metrics.scrape import Samples, delta, parse, value

pytestmark = pytest.mark.django_db


def scrape(client: Client, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.content.decode())


def test_requests_are_counted_by_route_pattern_method_and_status(api: Any, user: Any) -> None:
    # given
    client = Client()
    before = scrape(client)
    # when: three lists, two missing novels (two paths, one pattern), an unknown API path, an unknown page
    for _ in range(3):
        assert api.get("/api/v1/novels").status_code == 200
    assert api.get("/api/v1/novels/999991").status_code == 404
    assert api.get("/api/v1/novels/999992").status_code == 404
    assert api.get("/api/v1/no-such-thing").status_code == 404
    assert client.get("/no-such-page").status_code == 404
    after = scrape(client)
    # then
    requests = "http_requests_total"
    assert delta(before, after, requests, route="/api/v1/novels", method="GET", status="200") == 3
    assert delta(before, after, requests, route="/api/v1/novels/<int:novel_id>", method="GET", status="404") == 2
    assert delta(before, after, requests, route="/^api/", method="GET", status="404") == 1
    assert delta(before, after, requests, route="(unmatched)", method="GET", status="404") == 1
    # the first scrape itself is counted by the time of the second
    assert delta(before, after, requests, route="/metrics", method="GET", status="200") == 1
    durations = "http_request_duration_seconds_count"
    assert delta(before, after, durations, route="/api/v1/novels", method="GET") == 3
    assert delta(before, after, durations, route="/api/v1/novels/<int:novel_id>", method="GET") == 2
    # no raw path ever becomes a label
    assert not any("999991" in str(labels) for _name, labels in after)


def test_a_strange_method_is_counted_as_other(client: Client) -> None:
    before = scrape(client)
    response = client.generic("BREW", "/readyz")
    after = scrape(client)
    status = str(response.status_code)
    assert delta(before, after, "http_requests_total", route="/readyz", method="other", status=status) == 1
    assert delta(before, after, "http_requests_total", route="/readyz", method="BREW", status=status) == 0


def test_rate_limit_refusals_are_counted_by_scope(api: Any, settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "2/min"},
    }
    client = Client()
    before = scrape(client)
    statuses = [api.get("/api/v1/novels").status_code for _ in range(4)]
    after = scrape(client)
    assert statuses == [200, 200, 429, 429]
    assert delta(before, after, "ratelimit_refusals_total", scope="user") == 2
    assert delta(before, after, "http_requests_total", route="/api/v1/novels", method="GET", status="429") == 2


def test_holds_open_are_read_from_the_database_when_scraped(user: Any, client: Client) -> None:
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    for i, (amount, status) in enumerate([(100, "active"), (250, "active"), (999, "settled")]):
        Hold.objects.create(
            generation_id=f"gen_m{i}",
            user=user,
            model_id="m",
            day=now.date(),
            amount=amount,
            free_part=amount,
            paid_part=0,
            status=status,
            created_at=now - timedelta(seconds=120 * (i + 1)),
            expires_at=now + timedelta(minutes=30),
        )
    samples = scrape(client)
    assert value(samples, "billing_holds_open") == 2
    assert value(samples, "billing_holds_open_characters") == 350
    assert 240 <= value(samples, "billing_oldest_hold_age_seconds") < 300


def test_without_a_token_setting_anyone_may_read(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer", 401),
        ("Basic czNjcmV0LXRva2Vu", 401),
        ("Bearer wrong-token", 403),
        ("Bearer s3cret-token-but-longer", 403),
        ("Bearer s3cret-toke", 403),
    ],
)
def test_with_a_token_only_that_bearer_may_read(
    client: Client, settings: Any, authorization: str | None, status: int
) -> None:
    settings.METRICS_TOKEN = "s3cret-token"
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == status
    body = response.content.decode()
    # nothing leaks: no metric, no hint of the token, the same short body whatever was sent
    assert body in ("Unauthorized\n", "Forbidden\n")
    assert "http_requests_total" not in body and "s3cret" not in body
    if status == 401:
        assert response["WWW-Authenticate"] == "Bearer"


def test_with_a_token_the_right_bearer_reads(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = "s3cret-token"
    samples = scrape(client, Authorization="Bearer s3cret-token")
    assert ("billing_holds_open", frozenset()) in samples


def test_only_get(client: Client) -> None:
    assert client.post("/metrics").status_code == 405


def test_metrics_is_not_in_the_openapi_schema(anon: Any) -> None:
    schema = anon.get("/api/schema/?format=json")
    assert schema.status_code == 200
    assert "/metrics" not in schema.content.decode()
