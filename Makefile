# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCALE ?= 1

# UI runs and CLI runs share one instance: dagster.yaml at the repo root, storage in the embedded
# instance server. DAGSTER_HOME must come from the environment, not from .env.
export DAGSTER_HOME := $(CURDIR)
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install up down status demo demo-source dev test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/dual-db up

down: install
	$(BIN)/dual-db down

status: install
	$(BIN)/dual-db status

demo-source: up
	$(BIN)/dual-db demo-source --scale $(SCALE) --reset

demo: demo-source
	$(BIN)/dagster job execute -m dual_db.definitions -j migrate

dev: up
	$(BIN)/dagster dev -w workspace.yaml

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check dual_db dual_db_tests
	$(BIN)/ruff format --check dual_db dual_db_tests

clean: down
	rm -rf .dual_db
