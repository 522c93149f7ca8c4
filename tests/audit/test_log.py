"""The operators' audit log: append-only (ORM, admin, and on PostgreSQL raw SQL), and one entry for each
action on money, memberships, tokens and connections — through the admin, the services and the
management commands — with before/after values and never a secret."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import ApiToken
from apps.accounts.services import token_authenticate, token_create
from apps.audit.models import AuditEntry, AuditImmutable
from apps.audit.services import Actor, audit_record
from apps.billing import services as billing
from apps.billing.models import LedgerEntry, Membership, Plan, RedemptionCode, Wallet
from apps.providers import services as providers
from apps.providers.models import AIModel, Connection
from tests.providers.test_admin import connection_form, model_form

pytestmark = pytest.mark.django_db

KEY = "sk-audit-SECRET-0123456789abcdef"
NEW_KEY = "sk-audit-ROTATED-fedcba9876543210"


@pytest.fixture
def root() -> Any:
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456789")


@pytest.fixture
def staff(root: Any) -> Client:
    client = Client(headers={"accept-language": "en"})
    client.force_login(root)
    return client


def entries(**filters: Any) -> list[tuple[str, str, str, str, Any, Any]]:
    """(actor, via, action, target_repr, before, after) of the matching entries, oldest first."""
    rows = AuditEntry.objects.filter(**filters).order_by("id")
    return [(e.actor, e.via, e.action, e.target_repr, e.before, e.after) for e in rows]


def raw_log() -> str:
    """Everything the log holds, as text (to look for secrets in)."""
    return json.dumps(list(AuditEntry.objects.values()), default=str, ensure_ascii=False)


# -- append-only ---------------------------------------------------------------------------------


@pytest.fixture
def entry() -> AuditEntry:
    return audit_record(by=Actor(None, "command:test"), action="x.test", target_type="t", target_id=1, note="first")


def test_the_orm_refuses_to_change_or_delete_an_entry(entry: AuditEntry) -> None:
    entry.note = "rewritten"
    with pytest.raises(AuditImmutable):
        entry.save()
    with pytest.raises(AuditImmutable):
        entry.delete()
    with pytest.raises(AuditImmutable):
        AuditEntry.objects.filter(pk=entry.pk).update(note="rewritten")
    with pytest.raises(AuditImmutable):
        AuditEntry.objects.all().delete()
    with pytest.raises(AuditImmutable):
        AuditEntry.objects.bulk_update([entry], ["note"])
    assert AuditEntry.objects.get().note == "first"


def test_nobody_holds_add_change_or_delete_permissions() -> None:
    codenames = set(Permission.objects.filter(content_type__app_label="audit").values_list("codename", flat=True))
    assert codenames == {"view_auditentry"}


@pytest.mark.postgres
@pytest.mark.parametrize("sql", ["UPDATE audit_auditentry SET note = 'rewritten'", "DELETE FROM audit_auditentry"])
def test_postgres_refuses_raw_updates_and_deletes(entry: AuditEntry, sql: str) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert AuditEntry.objects.get().note == "first"


def test_the_admin_shows_the_log_read_only(staff: Client, entry: AuditEntry) -> None:
    listing = staff.get("/admin/audit/auditentry/")
    assert listing.status_code == 200 and "x.test" in listing.content.decode()
    assert staff.get(f"/admin/audit/auditentry/{entry.pk}/change/").status_code == 200
    assert staff.post(f"/admin/audit/auditentry/{entry.pk}/change/", {"note": "x"}).status_code == 403
    assert staff.get("/admin/audit/auditentry/add/").status_code == 403
    assert staff.get(f"/admin/audit/auditentry/{entry.pk}/delete/").status_code == 403
    deleted = staff.post(
        "/admin/audit/auditentry/", {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    )
    assert deleted.status_code == 200  # no such action: the list again
    assert AuditEntry.objects.count() == 1


# -- money ----------------------------------------------------------------------------------------


def wallet_action(staff: Client, name: str, users: list[Any], **form: str) -> Any:
    data = {"action": name, "_selected_action": [u.pk for u in users], "apply": "1", **form}
    return staff.post("/admin/billing/wallet/", data, follow=True)


def test_grant_and_adjust_through_the_admin(staff: Client, user: Any) -> None:
    billing.wallet_grant(user=user, amount=100)
    wallet_action(staff, "grant", [user], amount="250", note="compensation")
    wallet_action(staff, "adjust", [user], amount="-50", note="clawback")
    wallet_action(staff, "adjust", [user], amount="-9999", note="too much")  # refused: nothing written
    grant, adjust = LedgerEntry.objects.filter(created_by__username="root").order_by("id")
    assert entries(via="admin") == [
        (
            "root",
            "admin",
            "wallet.grant",
            "alice",
            {"paid_balance": 100},
            {"paid_balance": 350, "ledger_entry": grant.pk},
        ),
        (
            "root",
            "admin",
            "wallet.adjust",
            "alice",
            {"paid_balance": 350},
            {"paid_balance": 300, "ledger_entry": adjust.pk},
        ),
    ]
    assert list(AuditEntry.objects.filter(via="admin").order_by("id").values_list("note", flat=True)) == [
        "+250 compensation",
        "-50 clawback",
    ]
    assert entries(via="service")[0][2] == "wallet.grant"  # the setup's own grant, by a service call
    assert Wallet.objects.get(pk=user.pk).paid_balance == 300


def test_a_grant_by_a_service_call_is_audited_with_its_author(user: Any, other_user: Any) -> None:
    entry = billing.wallet_grant(user=user, amount=500, note="welcome", created_by=other_user)
    assert entries() == [
        (
            "bob",
            "service",
            "wallet.grant",
            "alice",
            {"paid_balance": 0},
            {"paid_balance": 500, "ledger_entry": entry.pk},
        )
    ]


def test_redemption_codes_are_audited_without_the_codes(staff: Client) -> None:
    staff.post(
        "/admin/billing/redemptioncode/bulk-create/",
        {"count": "3", "amount": "500", "member_days": "7", "batch": "launch", "expires_at": "2099-01-01 00:00"},
    )
    codes = list(RedemptionCode.objects.order_by("id"))
    [(actor, via, action, target, before, after)] = entries()
    assert (actor, via, action, target, before) == ("root", "admin", "redemptioncode.create", "launch", None)
    assert after == {
        "count": 3,
        "amount": 500,
        "member_days": 7,
        "batch": "launch",
        "expires_at": "2099-01-01T00:00:00Z",
        "ids": [codes[0].pk, codes[-1].pk],
    }
    # an operator moves the expiry, then deletes one: the code itself is never written down
    code = codes[0]
    staff.post(
        f"/admin/billing/redemptioncode/{code.pk}/change/",
        {"batch": "launch", "expires_at_0": "2099-06-01", "expires_at_1": "00:00:00"},
    )
    staff.post(f"/admin/billing/redemptioncode/{code.pk}/delete/", {"post": "yes"})
    assert [(a, b, c) for a, b, c, *_ in entries()][1:] == [
        ("root", "admin", "redemptioncode.update"),
        ("root", "admin", "redemptioncode.delete"),
    ]
    change, deletion = AuditEntry.objects.order_by("id")[1:]
    assert (change.before, change.after) == (
        {"expires_at": "2099-01-01T00:00:00Z"},
        {"expires_at": "2099-06-01T00:00:00Z"},
    )
    assert deletion.before["code"] == "[set]"
    log = raw_log()
    assert not any(c.code in log for c in codes)


def test_plan_changes_are_audited(staff: Client) -> None:
    plan = Plan.objects.create(tier="default", daily_free_quota=2000)
    staff.post(f"/admin/billing/plan/{plan.pk}/change/", {"tier": "default", "daily_free_quota": "500"})
    assert entries() == [
        ("root", "admin", "plan.update", "default: 500/day", {"daily_free_quota": 2000}, {"daily_free_quota": 500})
    ]


# -- memberships ---------------------------------------------------------------------------------


def test_membership_add_change_delete_in_the_admin(staff: Client, user: Any) -> None:
    form = {"user": str(user.pk), "tier": "member", "note": "vip"}
    dates = {
        "starts_at_0": "2026-01-01",
        "starts_at_1": "00:00:00",
        "created_at_0": "2026-01-01",
        "created_at_1": "00:00:00",
    }
    staff.post("/admin/billing/membership/add/", {**form, **dates, "ends_at_0": "2026-02-01", "ends_at_1": "00:00:00"})
    membership = Membership.objects.get()
    staff.post(
        f"/admin/billing/membership/{membership.pk}/change/",
        {**form, **dates, "ends_at_0": "2026-03-01", "ends_at_1": "00:00:00"},
    )
    staff.post(f"/admin/billing/membership/{membership.pk}/delete/", {"post": "yes"})
    created, changed, deleted = AuditEntry.objects.order_by("id")
    assert [e.action for e in (created, changed, deleted)] == [
        "membership.create",
        "membership.update",
        "membership.delete",
    ]
    assert (created.after["user"], created.after["tier"], created.after["ends_at"]) == (
        user.pk,
        "member",
        "2026-02-01T00:00:00Z",
    )
    assert (changed.before, changed.after) == ({"ends_at": "2026-02-01T00:00:00Z"}, {"ends_at": "2026-03-01T00:00:00Z"})
    assert deleted.before["id"] == membership.pk and deleted.target_id == str(membership.pk)


def test_create_api_token_command_audits_grant_membership_and_token(db: Any) -> None:
    out = StringIO()
    call_command("create_api_token", "dave", "--create-user", "--grant", "500", "--member-days", "30", stdout=out)
    token = out.getvalue().strip().splitlines()[-1]
    rows = list(AuditEntry.objects.order_by("id"))
    assert [(e.via, e.action) for e in rows] == [
        ("command:create_api_token", "membership.extend"),
        ("command:create_api_token", "wallet.grant"),
        ("command:create_api_token", "apitoken.create"),
    ]
    assert all(e.actor.startswith("shell") and e.actor_user_id is None for e in rows)
    record = ApiToken.objects.get()
    assert rows[2].after["prefix"] == record.prefix and rows[2].after["digest"] == "[set]"
    assert token not in raw_log() and record.digest not in raw_log()


def test_a_redeemed_code_is_not_an_operator_action(user: Any) -> None:
    [code] = billing.codes_create(count=1, amount=10, member_days=3, by=Actor(None, "command:test"))
    billing.code_redeem(user=user, code=code.code)
    assert [e.action for e in AuditEntry.objects.all()] == ["redemptioncode.create"]


# -- API tokens ------------------------------------------------------------------------------------


def test_revoking_tokens_in_the_admin_is_audited_and_immediate(staff: Client, user: Any) -> None:
    issued = token_create(user=user, name="laptop")
    assert token_authenticate(token=issued.token) is not None  # cached now
    staff.post("/admin/accounts/apitoken/", {"action": "revoke", "_selected_action": [issued.record.pk]}, follow=True)
    assert token_authenticate(token=issued.token) is None
    [(actor, via, action, target, before, after)] = entries()
    assert (actor, via, action, target) == ("root", "admin", "apitoken.revoke", f"{issued.record.prefix}… of alice")
    assert before["revoked_at"] is None and after["revoked_at"] is not None
    assert issued.token not in raw_log()


def test_token_edits_and_deletes_in_the_admin(staff: Client, user: Any) -> None:
    record = token_create(user=user, name="old").record
    expires = (timezone.now() + timedelta(days=3)).replace(microsecond=0)
    staff.post(
        f"/admin/accounts/apitoken/{record.pk}/change/",
        {"name": "renamed", "expires_at_0": f"{expires:%Y-%m-%d}", "expires_at_1": f"{expires:%H:%M:%S}"},
    )
    staff.post(f"/admin/accounts/apitoken/{record.pk}/delete/", {"post": "yes"})
    assert [(e.action, e.before.get("name")) for e in AuditEntry.objects.order_by("id")] == [
        ("apitoken.update", "old"),
        ("apitoken.delete", "renamed"),
    ]


# -- connections and models ------------------------------------------------------------------------


@pytest.fixture
def conn() -> Connection:
    return providers.connection_upsert(name="fake", kind="openai", base_url="http://127.0.0.1:9", api_key=KEY).obj


def test_connection_create_key_change_update_delete_in_the_admin(staff: Client) -> None:
    template = Connection(name="new", kind="openai", base_url="https://api.example.com/v1")
    staff.post(reverse("admin:providers_connection_add"), connection_form(template, api_key=KEY))
    created = Connection.objects.get(name="new")
    change = reverse("admin:providers_connection_change", args=[created.pk])
    staff.post(change, connection_form(created, api_key=NEW_KEY))
    staff.post(change, connection_form(created, read_timeout="60"))
    staff.post(change, connection_form(created, read_timeout="60"))  # nothing changed: no entry
    staff.post(reverse("admin:providers_connection_delete", args=[created.pk]), {"post": "yes"})
    rows = list(AuditEntry.objects.order_by("id"))
    assert [(e.actor, e.via, e.action, e.target_repr) for e in rows] == [
        ("root", "admin", "connection.create", "new"),
        ("root", "admin", "connection.key_change", "new"),
        ("root", "admin", "connection.update", "new"),
        ("root", "admin", "connection.delete", "new"),
    ]
    assert rows[0].after["api_key_encrypted"] == "[set]" and rows[0].after["api_key_hint"] == "[set]"
    assert (rows[1].before, rows[1].after) == (
        {"api_key_encrypted": "[set]", "api_key_hint": "[set]"},
        {"api_key_encrypted": "[set]", "api_key_hint": "[set]"},
    )
    assert (rows[2].before, rows[2].after) == ({"read_timeout": 120.0}, {"read_timeout": 60.0})
    log = raw_log()
    assert KEY not in log and NEW_KEY not in log and "sk-…" not in log and "cdef" not in log


def test_models_and_fallbacks_edited_in_the_admin(staff: Client, conn: Connection) -> None:
    m1 = providers.model_upsert(model_id="m1", connection=conn, upstream_model="u1").obj
    m2 = providers.model_upsert(model_id="m2", connection=conn, upstream_model="u2").obj
    staff.post(reverse("admin:providers_aimodel_change", args=[m1.pk]), model_form(m1, [m2]))
    staff.post(
        reverse("admin:providers_aimodel_changelist"),
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000",
            "form-0-id": str(m1.pk),
            "form-0-input_ratio": "2.5",
            "form-0-output_ratio": "1.00",
            "form-0-enabled": "on",
            "_save": "Save",
        },
    )
    assert [(e.action, e.target_repr, e.before, e.after) for e in AuditEntry.objects.order_by("id")] == [
        (
            "modelfallback.create",
            f"{m1.pk} → {m2.pk}",
            None,
            {"id": m1.fallback_links.get().pk, "model": m1.pk, "fallback": m2.pk, "position": 0},
        ),
        ("aimodel.update", "m1", {"input_ratio": "1.00"}, {"input_ratio": "2.5"}),
    ]


def test_models_added_inline_on_the_connection_page(staff: Client, conn: Connection) -> None:
    data = connection_form(conn)
    data.update(
        {
            "models-TOTAL_FORMS": "1",
            "models-0-model_id": "inline-m",
            "models-0-upstream_model": "u",
            "models-0-context_tokens": "8192",
            "models-0-max_output_tokens": "1024",
            "models-0-input_ratio": "1",
            "models-0-output_ratio": "1",
            "models-0-enabled": "on",
        }
    )
    staff.post(reverse("admin:providers_connection_change", args=[conn.pk]), data)
    assert [(e.action, e.target_repr) for e in AuditEntry.objects.all()] == [("aimodel.create", "inline-m")]
    assert AIModel.objects.filter(model_id="inline-m").exists()


def test_import_models_audits_changes_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_TEST_KEY", KEY)
    path = tmp_path / "models.toml"
    toml = """
[[connections]]
name = "up"
kind = "openai"
base_url = "https://api.example.com/v1"
api_key_env = "AUDIT_TEST_KEY"
timeout_seconds = {timeout}

[[models]]
model_id = "a"
connection = "up"
upstream_model = "ua"
context_tokens = 8192
max_output_tokens = 1024
input_ratio = 1
output_ratio = 1
fallbacks = {fallbacks}

[[models]]
model_id = "b"
connection = "up"
upstream_model = "ub"
context_tokens = 8192
max_output_tokens = 1024
input_ratio = 1
output_ratio = 1
"""
    path.write_text(toml.format(timeout=120, fallbacks="[]"))
    call_command("import_models", str(path), stdout=StringIO())
    call_command("import_models", str(path), stdout=StringIO())  # unchanged: nothing more
    path.write_text(toml.format(timeout=30, fallbacks='["b"]'))
    call_command("import_models", str(path), stdout=StringIO())
    assert [(e.via, e.action, e.target_repr, e.before, e.after) for e in AuditEntry.objects.order_by("id")][3:] == [
        ("command:import_models", "connection.update", "up", {"read_timeout": 120.0}, {"read_timeout": 30.0}),
        ("command:import_models", "aimodel.fallbacks", "a", {"fallbacks": []}, {"fallbacks": ["b"]}),
    ]
    assert [e.action for e in AuditEntry.objects.order_by("id")][:3] == [
        "connection.create",
        "aimodel.create",
        "aimodel.create",
    ]
    assert KEY not in raw_log()


def test_the_quick_start_at_startup_is_audited(settings: Any) -> None:
    from apps.providers.quickstart import quickstart_ensure

    settings.LLM_BASE_URL = "https://llm.example.com/v1"
    settings.LLM_API_KEY = KEY
    settings.LLM_MODELS = ["qs-model"]
    settings.DEFAULT_MODEL_ID = "qs-model"
    quickstart_ensure()
    assert [(e.actor, e.via, e.action) for e in AuditEntry.objects.order_by("id")] == [
        (AuditEntry.objects.first().actor, "startup", "connection.create"),
        (AuditEntry.objects.first().actor, "startup", "aimodel.create"),
    ]
    assert KEY not in raw_log()


def test_values_are_json_in_the_database(user: Any) -> None:
    billing.membership_extend(user=user, days=3, by=Actor(user, "admin"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT after FROM audit_auditentry")
        (after,) = cursor.fetchone()
    stored = orjson.loads(after) if isinstance(after, str | bytes) else after
    assert stored["tier"] == "member" and stored["user"] == user.pk
