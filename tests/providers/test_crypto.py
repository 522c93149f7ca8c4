"""Provider API keys at rest: Fernet encryption, masking, rotation (apps/providers/crypto.py)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection as db_connection
from django.test import override_settings

from apps.providers import crypto
from apps.providers.models import Connection

pytestmark = pytest.mark.django_db

KEY = "sk-proj-SECRET-abcdefghijklmnop1234"
OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


def raw_row(pk: int) -> tuple[str, str]:
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted, api_key_hint FROM providers_connection WHERE id = %s", [pk])
        row = cursor.fetchone()
    return row[0], row[1]


def make_connection(key: str = KEY) -> Connection:
    conn = Connection(name="c", kind=Connection.Kind.OPENAI, base_url="https://api.openai.com/v1")
    conn.set_api_key(key)
    conn.save()
    return conn


def test_round_trip_through_the_database() -> None:
    conn = make_connection()
    assert Connection.objects.get(pk=conn.pk).api_key == KEY
    assert Connection.objects.get(pk=conn.pk).config().api_key == KEY


def test_the_key_is_never_stored_in_clear() -> None:
    # given
    conn = make_connection()

    # when
    encrypted, hint = raw_row(conn.pk)

    # then
    assert KEY not in encrypted
    assert encrypted.startswith("gAAAAA")  # a Fernet token (version byte 0x80, base64)
    assert hint == "sk-…1234"
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT * FROM providers_connection")
        assert all(KEY not in str(value) for row in cursor.fetchall() for value in row)


def test_encryption_is_randomised() -> None:
    assert crypto.encrypt(KEY) != crypto.encrypt(KEY)
    assert crypto.decrypt(crypto.encrypt(KEY)) == KEY


def test_empty_and_whitespace_keys() -> None:
    conn = make_connection("  ")
    assert raw_row(conn.pk) == ("", "")
    assert conn.api_key == ""
    assert conn.config().api_key is None
    assert crypto.encrypt("") == ""
    assert crypto.decrypt("") == ""


def test_set_api_key_strips_whitespace() -> None:
    conn = make_connection(f"  {KEY}\n")
    assert Connection.objects.get(pk=conn.pk).api_key == KEY


@pytest.mark.parametrize(
    ("secret", "masked"),
    [
        ("", ""),
        ("ab", "…ab"),
        ("abcd", "…cd"),
        ("12345678", "…78"),
        ("123456789", "123…6789"),
        ("sk-abcdefghijklmnopwxyz", "sk-…wxyz"),
        ("sk-ant-api03-0123456789", "sk-…6789"),
        ("AIzaSyA-0123456789abcd", "AIz…abcd"),
        ("密钥密钥密钥密钥密钥", "…密钥密钥"),
    ],
)
def test_mask(secret: str, masked: str) -> None:
    assert crypto.mask(secret) == masked


def test_rotation_with_two_keys() -> None:
    # given a key encrypted with the old key only
    with override_settings(FIELD_ENCRYPTION_KEY=OLD):
        conn = make_connection()
        old_token, _ = raw_row(conn.pk)

    # when the new key is prepended: old tokens still decrypt, new writes use the new key
    with override_settings(FIELD_ENCRYPTION_KEY=f"{NEW},{OLD}"):
        conn = Connection.objects.get(pk=conn.pk)
        assert conn.api_key == KEY
        conn.set_api_key(conn.api_key)  # re-save = re-encrypt with the first key
        conn.save()
        new_token, _ = raw_row(conn.pk)
    assert new_token != old_token

    # then the old key can be dropped
    with override_settings(FIELD_ENCRYPTION_KEY=NEW):
        assert Connection.objects.get(pk=conn.pk).api_key == KEY
        assert Fernet(NEW.encode()).decrypt(new_token.encode()).decode() == KEY
    with override_settings(FIELD_ENCRYPTION_KEY=OLD), pytest.raises(crypto.DecryptionError):
        _ = Connection.objects.get(pk=conn.pk).api_key


def test_wrong_key_raises_decryption_error() -> None:
    with override_settings(FIELD_ENCRYPTION_KEY=OLD):
        conn = make_connection()
    with override_settings(FIELD_ENCRYPTION_KEY=NEW):
        conn = Connection.objects.get(pk=conn.pk)
        with pytest.raises(crypto.DecryptionError) as info:
            _ = conn.api_key
        assert KEY not in str(info.value)
        with pytest.raises(crypto.DecryptionError):
            conn.config()


def test_garbage_token_raises_decryption_error() -> None:
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt("not-a-fernet-token")


def test_default_key_is_derived_from_secret_key() -> None:
    with override_settings(FIELD_ENCRYPTION_KEY="", SECRET_KEY="one-secret-key-for-tests-0123456789"):
        token = crypto.encrypt(KEY)
        assert crypto.decrypt(token) == KEY
    with (
        override_settings(FIELD_ENCRYPTION_KEY="", SECRET_KEY="another-secret-key-for-tests-012345"),
        pytest.raises(crypto.DecryptionError),
    ):
        crypto.decrypt(token)
