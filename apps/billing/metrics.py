"""Billing's scrape-time metrics: the holds open, read from the database when `/metrics` is scraped — a
fact of the books, not of one process (a hold placed by one process is settled by another, or by the
sweeper after a crash), so it is not counted in process memory."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import DatabaseError
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apps.billing.selectors import holds_open

logger = logging.getLogger("apps.billing.metrics")


class HoldsCollector(Collector):
    """`billing_holds_open`, `billing_holds_open_characters`, `billing_oldest_hold_age_seconds`.
    Nothing when the database cannot be read (the other metrics are still served; the error is logged)."""

    def collect(self) -> Iterator[Metric]:
        try:
            summary = holds_open()
        except DatabaseError:
            logger.exception("holds metrics: the database could not be read")
            return
        yield GaugeMetricFamily("billing_holds_open", "Active holds (generations in progress).", value=summary.count)
        yield GaugeMetricFamily(
            "billing_holds_open_characters", "Characters reserved by active holds.", value=summary.characters
        )
        age = (timezone.now() - summary.oldest_created_at).total_seconds() if summary.oldest_created_at else 0.0
        yield GaugeMetricFamily(
            "billing_oldest_hold_age_seconds", "Age of the oldest active hold (0 when none).", value=max(0.0, age)
        )
