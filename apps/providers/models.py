from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from apps.providers import crypto
from apps.providers.adapters.base import ConnectionConfig
from apps.providers.local import local_model_spec


class Connection(models.Model):
    """An upstream LLM endpoint and its credentials (operator-managed)."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible Chat Completions"
        ANTHROPIC = "anthropic", "Anthropic Messages"
        GEMINI = "gemini", "Google Gemini (AI Studio)"
        OPENAI_TEXT = "openai_text", "Text Completions (instruct template)"
        MOCK = "mock", "Mock (offline, deterministic)"
        LOCAL = "local", "Local model (llama.cpp server run by the app)"

    class PostProcessing(models.TextChoices):
        NONE = "none", "none"
        MERGE = "merge", "merge"
        SEMI_STRICT = "semi-strict", "semi-strict"
        STRICT = "strict", "strict"
        SINGLE_USER = "single-user", "single-user"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    base_url = models.CharField(max_length=500, blank=True, default="")
    api_key_encrypted = models.TextField(blank=True, default="", editable=False)
    api_key_hint = models.CharField(max_length=20, blank=True, default="", editable=False)
    # Extra request headers can be credentials (`api-key`, `x-org-id`): encrypted at rest like the key,
    # only their names and masked values shown (`extra_headers_hint`).
    extra_headers_encrypted = models.TextField(blank=True, default="", editable=False)
    extra_headers_hint = models.CharField(max_length=500, blank=True, default="", editable=False)
    connect_timeout = models.FloatField(default=10.0, validators=[MinValueValidator(0.1)])
    read_timeout = models.FloatField(default=120.0, validators=[MinValueValidator(0.1)])
    max_concurrency = models.PositiveIntegerField(default=32, help_text="0 = unlimited")
    prompt_post_processing = models.CharField(
        max_length=16, choices=PostProcessing.choices, default=PostProcessing.NONE
    )
    instruct_template = models.CharField(
        max_length=32,
        blank=True,
        default="",
        help_text="openai_text: chatml, llama3, mistral, alpaca, gemma, transcript or custom",
    )
    custom_instruct_template = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str:
        return crypto.decrypt(self.api_key_encrypted)

    def set_api_key(self, raw: str | None) -> None:
        raw = (raw or "").strip()
        self.api_key_encrypted = crypto.encrypt(raw)
        self.api_key_hint = crypto.mask(raw)

    @property
    def extra_headers(self) -> dict[str, str]:
        raw = crypto.decrypt(self.extra_headers_encrypted)
        return json.loads(raw) if raw else {}

    @extra_headers.setter
    def extra_headers(self, headers: Mapping[str, str] | None) -> None:
        headers = dict(headers or {})
        self.extra_headers_encrypted = crypto.encrypt(json.dumps(headers, ensure_ascii=False)) if headers else ""
        self.extra_headers_hint = "; ".join(f"{name}: {crypto.mask(value)}" for name, value in headers.items())[:500]

    def config(self) -> ConnectionConfig:
        options: Mapping[str, Any] = {}
        if self.kind == self.Kind.LOCAL:
            options = {"spec": local_model_spec()}
        return ConnectionConfig(
            kind=self.kind,
            base_url=self.base_url,
            api_key=self.api_key or None,
            extra_headers=self.extra_headers,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            instruct_template=self.instruct_template or None,
            custom_instruct_template=self.custom_instruct_template or None,
            options=options,
        )


class AIModel(models.Model):
    """A model users can pick (`modelId`), served by a connection's upstream model."""

    model_id = models.CharField(max_length=100, unique=True)
    display_name = models.CharField(max_length=200, blank=True, default="")
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="models")
    upstream_model = models.CharField(max_length=200)
    context_tokens = models.PositiveIntegerField(default=8192, validators=[MinValueValidator(1)])
    max_output_tokens = models.PositiveIntegerField(default=4096, validators=[MinValueValidator(1)])
    input_ratio = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        default=Decimal("1"),
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text="characters per charged unit of input",
    )
    output_ratio = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        default=Decimal("1"),
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text="characters per charged unit of output",
    )
    is_free = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("model_id",)
        verbose_name = "AI model"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(input_ratio__gte=Decimal("0.01")), name="aimodel_input_ratio_min"
            ),
            models.CheckConstraint(
                condition=models.Q(output_ratio__gte=Decimal("0.01")), name="aimodel_output_ratio_min"
            ),
        ]

    def __str__(self) -> str:
        return self.model_id


class ModelFallback(models.Model):
    """Ordered fallbacks of a model: tried in `position` order when it fails before its first token."""

    model = models.ForeignKey(AIModel, on_delete=models.CASCADE, related_name="fallback_links")
    fallback = models.ForeignKey(AIModel, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ("position", "id")
        constraints = [
            models.UniqueConstraint(fields=["model", "fallback"], name="model_fallback_unique"),
            models.CheckConstraint(condition=~models.Q(model=models.F("fallback")), name="model_fallback_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.model_id} → {self.fallback_id}"
