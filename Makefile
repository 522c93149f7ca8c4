# The two commands of the README: `make run` serves the API, `make test` runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# Prometheus multi-process mode for the local processes: `make run` and `make worker` share this directory, so
# /metrics counts the worker's tasks too; each process makes it and drops the files of gone processes at start.
METRICS_DIR ?= $(CURDIR)/.run/prometheus

.PHONY: install run test lint typecheck format migrate worker beat messages fuzz

install:
	@scripts/bootstrap

# The embedded local model unless LLM_BASE_URL or LLM_PROVIDER says otherwise (scripts/run).
run: export DEBUG ?= true
# the playground's own origin (http://HOST:PORT/playground/): a page served from there may call the API
run: export CORS_ALLOWED_ORIGINS ?= http://$(HOST):$(PORT)
run: export PROMETHEUS_MULTIPROC_DIR ?= $(METRICS_DIR)
run: install
	@VENV=$(VENV) HOST=$(HOST) PORT=$(PORT) scripts/run

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy apps

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

migrate: install
	$(PY) manage.py migrate --noinput

# One worker for both queues: `generation` (resumable jobs; each thread of the pool waits on a job that runs
# on the worker's event loop, so WORKER_CONCURRENCY is how many generations it carries at once) and
# `housekeeping` (sweeps, recovery). Larger set-ups run `celery … worker --queues generation` and
# `--queues housekeeping` separately (docs/jobs.md).
WORKER_CONCURRENCY ?= 256
worker: export DEBUG ?= true
worker: export PROMETHEUS_MULTIPROC_DIR ?= $(METRICS_DIR)
worker: install
	$(VENV)/bin/celery -A writing_service worker --pool threads --concurrency $(WORKER_CONCURRENCY) \
		--queues generation,housekeeping --loglevel=INFO

beat: export DEBUG ?= true
beat: install
	$(VENV)/bin/celery -A writing_service beat --loglevel=INFO

messages: install
	cd writing_service && ../$(PY) ../manage.py compilemessages --ignore=.venv

fuzz: install
	scripts/fuzz_api.sh
