"""The models of `/v1/models`: every model users may pick (`GET /api/v1/models`' set), in OpenAI's shape
plus this service's fields. Never the connection, its URL, the upstream model or a key."""

from __future__ import annotations

from typing import Any

from apps.providers.models import AIModel
from apps.providers.selectors import models_visible

OWNER = "writing-service"


def _model_out(model: AIModel) -> dict[str, Any]:
    return {
        "id": model.model_id,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": OWNER,
        "display_name": model.display_name or model.model_id,
        "context_length": model.context_tokens,
        "max_output_tokens": model.max_output_tokens,
        "input_ratio": float(model.input_ratio),
        "output_ratio": float(model.output_ratio),
        "is_free": model.is_free,
    }


def models_list() -> list[dict[str, Any]]:
    return [_model_out(m) for m in models_visible()]


def model_get(*, model_id: str) -> dict[str, Any] | None:
    model = models_visible().filter(model_id=model_id).first()
    return None if model is None else _model_out(model)
