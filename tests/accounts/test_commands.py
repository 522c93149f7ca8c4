from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from apps.accounts.models import ApiToken
from apps.accounts.services import token_digest

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_create_api_token_creates_user_and_prints_token_last(anon):
    lines = run("create_api_token", "carol", "--create-user", "--password", "pw-123456")
    token = lines[-1]
    assert ApiToken.objects.get(prefix=token[:12]).digest == token_digest(token)
    user = get_user_model().objects.get(username="carol")
    assert user.check_password("pw-123456")
    assert user.groups.filter(name="writer").exists()
    me = anon.get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert me.status_code == 200 and me.json()["username"] == "carol"


def test_create_api_token_for_missing_user_without_flag_fails(db):
    with pytest.raises(CommandError, match="does not exist"):
        run("create_api_token", "ghost")
    assert ApiToken.objects.count() == 0


def test_create_api_token_rejects_non_positive_billing_flags(user):
    with pytest.raises(CommandError, match="positive"):
        run("create_api_token", "alice", "--grant", "0")
    assert ApiToken.objects.count() == 0


def test_demo_setup_prints_working_token_and_revokes_previous(anon):
    first = run("demo_setup")
    token1 = next(line.strip() for line in first if line.strip().startswith("wst_"))
    assert any("curl" in line and token1 in line for line in first)
    assert any("/playground/" in line for line in first)
    second = run("demo_setup")
    token2 = next(line.strip() for line in second if line.strip().startswith("wst_"))
    assert anon.get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {token2}").status_code == 200
    assert anon.get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {token1}").status_code == 401
