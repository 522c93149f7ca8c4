# Extra request headers may be credentials: encrypted at rest like the API key (issue 20, item 12).

import json

from django.db import migrations, models

from apps.providers import crypto


def encrypt_headers(apps, schema_editor):
    Connection = apps.get_model("providers", "Connection")
    for connection in Connection.objects.exclude(extra_headers={}):
        headers = dict(connection.extra_headers or {})
        if not headers:
            continue
        connection.extra_headers_encrypted = crypto.encrypt(json.dumps(headers, ensure_ascii=False))
        connection.extra_headers_hint = "; ".join(f"{k}: {crypto.mask(v)}" for k, v in headers.items())[:500]
        connection.save(update_fields=["extra_headers_encrypted", "extra_headers_hint"])


def decrypt_headers(apps, schema_editor):
    Connection = apps.get_model("providers", "Connection")
    for connection in Connection.objects.exclude(extra_headers_encrypted=""):
        connection.extra_headers = json.loads(crypto.decrypt(connection.extra_headers_encrypted))
        connection.save(update_fields=["extra_headers"])


class Migration(migrations.Migration):

    dependencies = [
        ("providers", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="connection",
            name="extra_headers_encrypted",
            field=models.TextField(blank=True, default="", editable=False),
        ),
        migrations.AddField(
            model_name="connection",
            name="extra_headers_hint",
            field=models.CharField(blank=True, default="", editable=False, max_length=500),
        ),
        migrations.RunPython(encrypt_headers, decrypt_headers),
        migrations.RemoveField(
            model_name="connection",
            name="extra_headers",
        ),
    ]
