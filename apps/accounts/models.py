from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

# Permission strings of the seed (`generation:writing:generate`) are Django permission codenames
# of this app: `user.has_perm("accounts.generation:writing:generate")`.
PERM_WRITING_GENERATE = "generation:writing:generate"
PERM_ROLEPLAY_GENERATE = "generation:roleplay:generate"
PERM_CHAT_GENERATE = "generation:chat:generate"  # the OpenAI-compatible API (/v1)
GENERATION_PERMISSIONS = (
    (PERM_WRITING_GENERATE, "Can generate in writing mode"),
    (PERM_ROLEPLAY_GENERATE, "Can generate in roleplay mode"),
    (PERM_CHAT_GENERATE, "Can generate through the OpenAI-compatible API"),
)


class GenerationAccess(models.Model):
    """Holder of the generation permissions (no table: permissions need a content type)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = GENERATION_PERMISSIONS

    def __str__(self) -> str:
        return "generation access"


class ApiToken(models.Model):
    """A bearer token: only a lookup prefix and a keyed hash are stored, never the token itself.

    `scope`: `all` works everywhere; `openai` only on the OpenAI-compatible API (`/v1/…`) — the token a
    user pastes into SillyTavern or Tavo cannot manage their account or spend through other routes."""

    class Scope(models.TextChoices):
        ALL = "all", "all"
        OPENAI = "openai", "openai"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ALL)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'token'})"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()
