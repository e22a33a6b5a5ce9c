# Two commands a newcomer needs: `make run` and `make test`. Everything else is a step.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev run test check lint typecheck unit bench clean

install: $(VENV)/.runtime

install-dev: $(VENV)/.dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.runtime $@

run: install
	$(BIN)/authgate serve

test: check unit

check: lint typecheck

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

# Two workers: the suite waits on sockets and subprocesses as much as it computes; a third
# starves the 4-process refresh proof of CPU (store pool waits past its 5 s timeout).
unit: install-dev
	$(BIN)/pytest -q -n 2 --durations=15

bench: install-dev
	$(BIN)/python -m loadtest.bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tests/.cache
