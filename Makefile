# The two commands of the README: `make run` serves the API, `make test` runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint typecheck format migrate worker beat messages fuzz

install:
	@scripts/bootstrap

# The embedded local model unless LLM_BASE_URL or LLM_PROVIDER says otherwise (scripts/run).
run: export DEBUG ?= true
# the playground's own origin (http://HOST:PORT/playground/): a page served from there may call the API
run: export CORS_ALLOWED_ORIGINS ?= http://$(HOST):$(PORT)
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

worker: export DEBUG ?= true
worker: install
	$(VENV)/bin/celery -A writing_service worker --loglevel=INFO

beat: export DEBUG ?= true
beat: install
	$(VENV)/bin/celery -A writing_service beat --loglevel=INFO

messages: install
	cd writing_service && ../$(PY) ../manage.py compilemessages --ignore=.venv

fuzz: install
	scripts/fuzz_api.sh
