"""Writing the audit log. Callers pass who acts (:class:`Actor`) and what changed; the entry is written in
the caller's transaction, so it exists exactly when the change does.

Values are snapshots of a model's concrete fields (``updated_at`` left out). Secret fields — provider
keys and headers (even their masked hints), token digests, passwords — are compared on their real
values but written as ``"[set]"`` or ``""`` only, so an entry says that a key changed, never what it is.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import models

from apps.audit.models import AuditEntry

SECRET_FIELDS = frozenset(
    {
        "api_key_encrypted",
        "api_key_hint",
        "extra_headers_encrypted",
        "extra_headers_hint",
        "digest",
        "password",
    }
)
KEY_FIELDS = frozenset({"api_key_encrypted", "extra_headers_encrypted"})  # changing one is a key change
SKIPPED_FIELDS = frozenset({"updated_at"})
REDACTED = "[set]"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who does an operator action and through what: the signed-in operator (``user``; None from a
    shell) and the way in (``via``: ``admin``, ``command:<name>``, ``startup``)."""

    user: Any
    via: str

    @classmethod
    def command(cls, name: str) -> Actor:
        return cls(None, f"command:{name}")

    @property
    def name(self) -> str:
        if self.user is not None and getattr(self.user, "pk", None) is not None:
            return str(self.user.get_username())
        try:
            return f"shell:{getpass.getuser()}"
        except (KeyError, OSError):  # no login name (a container without a passwd entry)
            return "shell"


def snapshot(obj: models.Model) -> dict[str, Any]:
    """The object's concrete field values by field name (foreign keys as ids), unredacted."""
    return {
        field.name: field.value_from_object(obj)
        for field in obj._meta.concrete_fields
        if field.name not in SKIPPED_FIELDS
    }


def redacted(values: Mapping[str, Any] | None, secret: Iterable[str] = ()) -> dict[str, Any] | None:
    if values is None:
        return None
    hidden = SECRET_FIELDS | set(secret)
    return {name: (REDACTED if value else "") if name in hidden else value for name, value in values.items()}


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    return [name for name in after if before.get(name) != after[name]]


def audit_record(
    *,
    by: Actor,
    action: str,
    target_type: str,
    target_id: Any = "",
    target_repr: str = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    note: str = "",
    secret: Iterable[str] = (),
) -> AuditEntry:
    """Append one entry (values redacted here, whatever the caller passed)."""
    user_id = getattr(by.user, "pk", None)
    return AuditEntry.objects.create(
        actor=by.name[:150],
        actor_user_id=user_id,
        via=by.via[:60],
        action=action[:60],
        target_type=target_type[:60],
        target_id=str(target_id if target_id is not None else "")[:64],
        target_repr=target_repr[:200],
        before=redacted(before, secret),
        after=redacted(after, secret),
        note=note[:300],
    )


def _target(obj: models.Model) -> dict[str, Any]:
    return {"target_type": obj._meta.label_lower, "target_id": obj.pk, "target_repr": str(obj)}


def audit_saved(
    *, by: Actor, obj: models.Model, before: Mapping[str, Any] | None, secret: Iterable[str] = ()
) -> AuditEntry | None:
    """The entry for a created (``before`` None) or updated object: only the changed fields, and the
    action ``<model>.key_change`` when a key field is among them. None when nothing changed."""
    after = snapshot(obj)
    name = obj._meta.model_name
    if before is None:
        return audit_record(by=by, action=f"{name}.create", after=after, secret=secret, **_target(obj))
    changed = changes(before, after)
    if not changed:
        return None
    verb = "key_change" if KEY_FIELDS.intersection(changed) else "update"
    return audit_record(
        by=by,
        action=f"{name}.{verb}",
        before={field: before.get(field) for field in changed},
        after={field: after[field] for field in changed},
        secret=secret,
        **_target(obj),
    )


def audit_deleted(*, by: Actor, obj: models.Model, before: Mapping[str, Any], secret: Iterable[str] = ()) -> AuditEntry:
    """The entry for a deleted object (``before``: its snapshot taken while it existed)."""
    return audit_record(
        by=by,
        action=f"{obj._meta.model_name}.delete",
        target_type=obj._meta.label_lower,
        target_id=before.get("id", obj.pk),
        target_repr=str(obj),
        before=before,
        secret=secret,
    )
