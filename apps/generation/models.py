from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.billing.selectors import Consumption


def new_generation_id() -> str:
    return "gen_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


class Generation(models.Model):
    """One generation call: what was asked, which model answered, what it produced and cost."""

    class Mode(models.TextChoices):
        WRITING = "writing", "writing"
        ROLEPLAY = "roleplay", "roleplay"
        CHAT = "chat", "chat"  # the OpenAI-compatible API (/v1)

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    public_id = models.CharField(max_length=40, unique=True, default=new_generation_id)
    # indexed by (user, -created_at) below: no index of its own (every generation writes each index)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations", db_index=False
    )
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.WRITING)
    prompt_id = models.BigIntegerField(null=True, blank=True)
    chat_id = models.BigIntegerField(null=True, blank=True)
    model_requested = models.CharField(max_length=100)
    model_used = models.CharField(max_length=100, blank=True, default="")
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)  # (status, created_at)
    finish_reason = models.CharField(max_length=20, blank=True, default="")
    temperature = models.FloatField(default=0.7)
    max_tokens = models.PositiveIntegerField(default=2048)
    input_chars = models.BigIntegerField(default=0)
    output_chars = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    messages_count = models.PositiveIntegerField(default=0)
    history_dropped = models.PositiveIntegerField(default=0)
    hold_amount = models.BigIntegerField(default=0)
    total_cost = models.BigIntegerField(default=0)
    input_cost = models.BigIntegerField(default=0)
    output_cost = models.BigIntegerField(default=0)
    used_daily_free = models.BigIntegerField(default=0)
    used_paid = models.BigIntegerField(default=0)
    member_benefit_applied = models.BooleanField(default=False)
    stopped_by_balance = models.BooleanField(default=False)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=50, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    attempts = models.JSONField(default=list, blank=True)
    content = models.TextField(blank=True, default="")
    reasoning = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["user", "-created_at"]), models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return self.public_id

    def usage(self) -> dict[str, int]:
        """The record's token usage in the API's shape (`promptTokens`, `completionTokens`, `totalTokens`)."""
        return {
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "totalTokens": self.prompt_tokens + self.completion_tokens,
        }

    def consumption(self) -> Consumption:
        """The record's cost: billing's `Consumption` (its `as_api()` is the one API shape)."""
        return Consumption(
            self.total_cost,
            self.input_cost,
            self.output_cost,
            self.used_daily_free,
            self.used_paid,
            self.member_benefit_applied,
            self.stopped_by_balance,
        )


# --- roleplay: personas, chats, messages ----------------------------------------------------------


def default_authors_note() -> dict[str, object]:
    return {"text": "", "depth": 4, "frequency": 1, "role": "system", "position": "in_chat"}


class Persona(models.Model):
    """Who the user plays in a roleplay chat (ST "user persona"): ``{{user}}`` and its description."""

    class Position(models.IntegerChoices):
        # SillyTavern's persona_description_positions (AFTER_CHAR = 1 is deprecated there: not offered).
        IN_PROMPT = 0, "in_prompt"
        AN_TOP = 2, "an_top"
        AN_BOTTOM = 3, "an_bottom"
        AT_DEPTH = 4, "at_depth"
        NONE = 9, "none"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="personas")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    description_position = models.PositiveSmallIntegerField(choices=Position.choices, default=Position.IN_PROMPT)
    depth = models.PositiveSmallIntegerField(default=2)
    role = models.CharField(max_length=10, default="system")
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(
                fields=["owner"], condition=models.Q(is_default=True), name="one_default_persona_per_user"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Chat(models.Model):
    """A roleplay chat with one character: attached books, author's note, variables, timed effects."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chats")
    character = models.ForeignKey("characters.Character", on_delete=models.CASCADE, related_name="chats")
    persona = models.ForeignKey(Persona, on_delete=models.SET_NULL, null=True, blank=True, related_name="chats")
    lorebooks = models.ManyToManyField("worldviews.Lorebook", blank=True, related_name="chats")
    authors_note = models.JSONField(default=default_authors_note, blank=True)
    scenario_override = models.TextField(blank=True, default="")
    variables = models.JSONField(default=dict, blank=True)
    timed_state = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-updated_at", "-id")
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return f"chat {self.pk}"


class ChatMessage(models.Model):
    """One chat message; ``swipes`` are its alternative texts and ``swipe_id`` the one shown."""

    class Role(models.TextChoices):
        USER = "user", "user"
        ASSISTANT = "assistant", "assistant"
        SYSTEM = "system", "system"

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    name = models.CharField(max_length=200, blank=True, default="")
    swipes = models.JSONField(default=list)
    swipe_id = models.PositiveIntegerField(default=0)
    hidden = models.BooleanField(default=False)
    generation_id = models.CharField(max_length=40, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("id",)
        indexes = [models.Index(fields=["chat", "id"])]

    def __str__(self) -> str:
        return f"{self.role} {self.pk}"

    @property
    def content(self) -> str:
        if 0 <= self.swipe_id < len(self.swipes):
            return str(self.swipes[self.swipe_id])
        return ""


class GlobalVariables(models.Model):
    """A user's global macro variables (`{{setglobalvar}}` / `{{getglobalvar}}`): shared by all of the
    user's chats, as SillyTavern keeps them across chats. Written with a paid turn, like chat variables."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="global_variables"
    )
    variables = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "global variables"

    def __str__(self) -> str:
        return f"global variables of user {self.user_id}"


# --- resumable generations (docs/jobs.md) -----------------------------------------------------------


def new_job_id() -> str:
    return "job_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


class GenerationJob(models.Model):
    """A generation run by a worker, detached from the HTTP request that asked for it: its events go
    to a stream per job that readers can join, leave and resume (`apps.generation.jobs`)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

    public_id = models.CharField(max_length=40, unique=True, default=new_job_id)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_jobs")
    generation = models.OneToOneField(
        Generation, to_field="public_id", on_delete=models.CASCADE, related_name="job", db_column="generation_id"
    )
    mode = models.CharField(max_length=16, choices=Generation.Mode.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # the prepared call (messages, limits, hold) the worker runs; emptied when the job ends
    payload = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True, default="")
    error_code = models.CharField(max_length=50, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return self.public_id
