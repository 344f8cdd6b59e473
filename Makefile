# Two commands matter: `make run` starts the whole system, `make test` runs the whole suite.
# Both install what they need (uv is bootstrapped with pip when missing).

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")

.PHONY: run test lint typecheck pytest bootstrap sync migrate bench

bootstrap:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet --user "uv>=0.5" \
		|| $(PYTHON) -m pip install --quiet "uv>=0.5"

sync: bootstrap
	$(UV) sync --frozen --quiet

run: sync
	$(UV) run --frozen todo-assistant serve

migrate: sync
	$(UV) run --frozen todo-assistant migrate

lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: sync
	$(UV) run --frozen mypy

pytest: sync
	$(UV) run --frozen pytest

test: lint typecheck pytest

bench: sync
	$(UV) run --frozen python -m bench
