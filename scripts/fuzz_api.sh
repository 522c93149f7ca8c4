#!/usr/bin/env bash
# Schema-driven fuzzing of the whole API (SPEC §11): schemathesis generates requests from our OpenAPI
# schema against a live server and fails on any 5xx. Usage: scripts/fuzz_api.sh [MAX_EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_EXAMPLES=${1:-25}
PORT=${FUZZ_PORT:-18666}
WORK=$(mktemp -d)
export DATABASE_URL="sqlite:///$WORK/fuzz.sqlite3" DEBUG=false LOG_LEVEL=ERROR LOG_FORMAT=json
# a production-like start: real secrets (the service refuses the public development key with DEBUG off)
SECRET_KEY=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(64))')
FIELD_ENCRYPTION_KEY=$(.venv/bin/python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
export SECRET_KEY FIELD_ENCRYPTION_KEY
export RATE_LIMIT_USER=0 RATE_LIMIT_GENERATION=0 RATE_LIMIT_AUTH=0 RATE_LIMIT_REDEEM=0
unset REDIS_URL
.venv/bin/python manage.py migrate -v0 --noinput
TOKEN=$(.venv/bin/python manage.py demo_setup | grep -o 'wst_[A-Za-z0-9_-]*' | head -1)
.venv/bin/python manage.py create_api_token demo --grant 1000000000 >/dev/null
.venv/bin/uvicorn writing_service.asgi:application --port "$PORT" --lifespan off --log-level error \
  > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
set +e
# boundary values of query parameters (dates, 64-bit integers): scripts/fuzz_hooks.py
SCHEMATHESIS_HOOKS=scripts.fuzz_hooks PYTHONPATH=. .venv/bin/schemathesis run "http://127.0.0.1:$PORT/api/schema/" --url "http://127.0.0.1:$PORT" \
  -H "Authorization: Bearer $TOKEN" --checks not_a_server_error --max-examples "$MAX_EXAMPLES" --workers 2 \
  --seed 20261122
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "server errors logged:" >&2
  grep '"level":"error"' "$WORK/server.log" | head -20 >&2 || true
fi
exit "$rc"
