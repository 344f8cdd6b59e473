# Two commands matter: `make run` starts the whole system, `make test` runs the whole suite.
# Both install what they need into .venv/ with uv: the uv on PATH, or else a private copy
# that scripts/uv puts into .tools/bin on first use (system Pythons often refuse pip: PEP 668).

PYTHON ?= python3
UV = env PYTHON="$(PYTHON)" scripts/uv
# Empty: the CLI's defaults ($$PORT / $$MCP_PORT, else 8000 / 8001).
PORT ?=
MCP_PORT ?=

.PHONY: run test lint typecheck pytest check-python bootstrap sync migrate bench

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  found=$$($(PYTHON) --version 2>/dev/null || echo "not found"); \
	  echo "Todo Assistant needs Python 3.11 or newer, and '$(PYTHON)' is $$found." >&2; \
	  echo "Install one (apt install python3.11, brew install python@3.12, ...) and name it:" \
	    "make $(or $(MAKECMDGOALS),run) PYTHON=python3.11" >&2; \
	  exit 1; }

bootstrap: check-python
	@$(UV) --version >/dev/null

sync: bootstrap
	$(UV) sync --frozen --quiet --python "$(PYTHON)"

# exec: make's SIGTERM then reaches uv, which passes it on to the servers.
run: sync
	exec $(UV) run --frozen todo-assistant serve $(if $(PORT),--port $(PORT)) $(if $(MCP_PORT),--mcp-port $(MCP_PORT))

migrate: sync
	$(UV) run --frozen todo-assistant migrate

lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: sync
	$(UV) run --frozen mypy

# The whole suite runs on parallel workers, each with its own databases (tests/conftest.py).
pytest: sync
	$(UV) run --frozen pytest

test: lint typecheck pytest

bench: sync
	$(UV) run --frozen python -m bench
