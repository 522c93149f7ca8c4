"""What a finished generation adds to the metrics (apps/core/metrics.py): its upstream calls by connection,
model and outcome (`calls.py`, as the dashboard counts them), time to first token, output characters and
characters charged. Called once per generation by `Relay.settle`, after the record is final."""

from __future__ import annotations

from typing import Any

from apps.billing.charges import count_chars
from apps.core.metrics import CHARGED_CHARACTERS, OUTPUT_CHARACTERS, UPSTREAM_CALLS, UPSTREAM_TTFT
from apps.generation.calls import final_call_outcome
from apps.generation.services import Finished, Outcome, Prepared

UNKNOWN = "(unknown)"


def generation_observe(*, prepared: Prepared, outcome: Outcome, finished: Finished) -> None:
    connections = {t.model_id: t.connection_name for t in prepared.targets}
    for attempt in outcome.attempts:
        model = attempt.model_id
        UPSTREAM_CALLS.labels(connections.get(model, UNKNOWN), model, attempt.error_code).inc()
    target: Any = outcome.target
    if target is None:
        return
    ttft_ms = outcome.ttft_ms
    final = final_call_outcome(status=outcome.status, error_code=outcome.error_code, first_text=ttft_ms is not None)
    if final is not None:
        UPSTREAM_CALLS.labels(target.connection_name, target.model_id, final).inc()
    if ttft_ms is not None:
        UPSTREAM_TTFT.labels(target.connection_name, target.model_id).observe(ttft_ms / 1000)
    output = count_chars(outcome.content) + count_chars(outcome.reasoning)
    if output:
        OUTPUT_CHARACTERS.labels(target.model_id).inc(output)
    for funds, key in (("free", "usedDailyFree"), ("paid", "usedPaid")):
        charged = finished.consumption.get(key, 0)
        if charged:
            CHARGED_CHARACTERS.labels(target.model_id, funds).inc(charged)
