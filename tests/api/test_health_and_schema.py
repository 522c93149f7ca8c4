import pytest
from django.db.utils import ConnectionHandler

from apps.core.api import health

pytestmark = pytest.mark.django_db


def test_healthz(anon):
    response = anon.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_ok(anon, settings):
    response = anon.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["checks"]["database"] == "ok"
    assert ("redis" in body["checks"]) is bool(settings.REDIS_URL)


def test_readyz_fails_when_database_unreachable(anon, monkeypatch, settings):
    # a real connection attempt to a database that cannot be reached
    if settings.IS_POSTGRES:
        broken = {**settings.DATABASES["default"], "HOST": "127.0.0.1", "PORT": "1", "OPTIONS": {}}
    else:
        broken = {**settings.DATABASES["default"], "NAME": "/nonexistent-dir/for/sure/db.sqlite3"}
    handler = ConnectionHandler({"default": broken})
    monkeypatch.setattr(health, "connections", handler)
    try:
        response = anon.get("/readyz")
    finally:
        handler.close_all()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["checks"]["database"] == "error"
    assert body["errors"]["database"].startswith("OperationalError")


def test_readyz_fails_when_redis_unreachable(anon, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = anon.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "redis": "error"}


def test_openapi_schema_generates_and_validates():
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    schema = SchemaGenerator().get_schema(request=None, public=True)
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/auth/token" in schema["paths"]
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}


def test_schema_and_docs_endpoints_are_public(anon):
    schema = anon.get("/api/schema/")
    assert schema.status_code == 200
    docs = anon.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
