"""The audit log, append-only: on PostgreSQL a trigger refuses UPDATE and DELETE of its rows, whoever
sends them (the ORM refuses them too, on every database). TRUNCATE is not refused: it is the database
owner's tool (and the test suite's), not the application's."""

import django.core.serializers.json
import django.utils.timezone
from django.db import migrations, models

TRIGGER = """
CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING
    MESSAGE = 'audit entries are append-only: ' || TG_OP || ' refused', ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON audit_auditentry
  FOR EACH ROW EXECUTE FUNCTION audit_entry_append_only();
"""
DROP_TRIGGER = """
DROP TRIGGER IF EXISTS audit_entry_append_only ON audit_auditentry;
DROP FUNCTION IF EXISTS audit_entry_append_only();
"""


def _on_postgres(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="AuditEntry",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("actor", models.CharField(max_length=150)),
                ("actor_user_id", models.BigIntegerField(blank=True, null=True)),
                ("via", models.CharField(help_text="admin, command:<name>, startup, service", max_length=60)),
                ("action", models.CharField(db_index=True, max_length=60)),
                ("target_type", models.CharField(max_length=60)),
                ("target_id", models.CharField(blank=True, default="", max_length=64)),
                ("target_repr", models.CharField(blank=True, default="", max_length=200)),
                (
                    "before",
                    models.JSONField(blank=True, encoder=django.core.serializers.json.DjangoJSONEncoder, null=True),
                ),
                (
                    "after",
                    models.JSONField(blank=True, encoder=django.core.serializers.json.DjangoJSONEncoder, null=True),
                ),
                ("note", models.CharField(blank=True, default="", max_length=300)),
            ],
            options={
                "verbose_name": "audit entry",
                "verbose_name_plural": "audit log",
                "ordering": ("-at", "-id"),
                "default_permissions": ("view",),
                "indexes": [models.Index(fields=["target_type", "target_id"], name="audit_target_idx")],
            },
        ),
        migrations.RunPython(_on_postgres(TRIGGER), _on_postgres(DROP_TRIGGER)),
    ]
