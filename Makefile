# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
# A recipe's pipeline fails when any command in it fails (the demo filters Dagster's output).
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCALE ?= 1

# UI runs and CLI runs share one instance: dagster.yaml at the repo root, storage in the embedded
# instance server. DAGSTER_HOME must come from the environment, not from .env.
export DAGSTER_HOME := $(CURDIR)
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install chromium up down status demo demo-source demo-soak dev test test-slow lint bench clean

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
	$(BIN)/dual-db reset-demo-targets
	$(BIN)/dual-db demo-source --scale $(SCALE) --reset

# Dagster's DEBUG event lines (two thirds of the output) stay in the run's log in the UI; the terminal
# shows progress, warnings, errors and the result. DEMO_LOG=full shows everything.
DEMO_LOG ?= short
DEMO_FILTER := $(if $(filter full,$(DEMO_LOG)),cat,grep --line-buffered -v -e ' - DEBUG - ')
demo: demo-source
	@set -e; start=$$(date +%s); \
	$(BIN)/dagster job execute -m dual_db.definitions -j migrate 2>&1 | $(DEMO_FILTER); \
	report=$$(ls -t .dual_db/dumps/*/verification_report.json | head -1); \
	echo; \
	summary=$$($(BIN)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["summary"])' $$report); \
	echo "migrate finished in $$(( $$(date +%s) - start )) s: $$summary"; \
	echo "report: $$report"; \
	echo "the UI: make dev, then http://127.0.0.1:3000 (Jobs → migrate → Runs: this run; Assets: source, core, ai, verification_report)"

# The demo continued: baseline, cutover, a few rounds of application traffic each followed by a soak
# run, then the decommission verdict (not ready: the week has not passed).
SOAK_ROUNDS ?= 3
demo-soak: demo
	$(BIN)/dagster asset materialize -m dual_db.definitions --select baseline/metrics
	$(BIN)/dagster asset materialize -m dual_db.definitions --select cutover
	for round in $$(seq $(SOAK_ROUNDS)); do \
	  $(BIN)/dual-db traffic --rounds 10 --seconds 30 && \
	  $(BIN)/dagster job execute -m dual_db.definitions -j soak || exit 1; \
	done
	$(BIN)/dagster asset materialize -m dual_db.definitions --select soak/decommission_readiness
	@echo
	@echo "The soak week so far: make dev, then open http://127.0.0.1:3000 →"
	@echo "  Assets → soak/health (Plots: batch_median_ms, rag_p50_ms, orphan_rows; Checks: the soak checks),"
	@echo "  Assets → cutover (the switch and rollback files), Assets → soak/decommission_readiness (the verdict)."
	@echo "In make dev the soak_schedule sensor runs the soak job every hour for 7 days after the cutover."

dev: up
	$(BIN)/dagster dev -w workspace.yaml

# The UI tests drive Debian's headless chromium (dual_db_tests/test_ui_end_to_end.py). Installed here when
# missing and this user may (root, or sudo without a password); otherwise the test fails saying so.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	    echo "chromium is missing and cannot be installed as $$(id -un): apt-get install -y chromium"; exit 0; fi; \
	  echo "installing chromium for the UI tests (apt-get install -y chromium)"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || \
	  { $$SUDO apt-get update -q >/dev/null && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	  echo "chromium could not be installed: the UI test will fail until it is"; }

# make test: everything but the slow suite, under 15 minutes; make test-slow: the fault suite and the
# end-to-end suites (crash recovery, the demo's soak week, the UI through dagster dev and chromium).
# .ci/run runs both.
test: install
	$(BIN)/python -m pytest -m "not slow"

test-slow: install chromium
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check dual_db dual_db_tests bench
	$(BIN)/ruff format --check dual_db dual_db_tests bench

# dual-db's migrate against the floor, pgcopydb, pg_dump/pg_restore and the hand-run runbook, on the
# bench's own servers (.dual_db/bench/); results in bench/results/. Sizes and repeats: BENCH_SCALES
# (default 3.5,10: about 350 MiB and 1 GiB), BENCH_REPEATS (3), BENCH_CONTENDERS, BENCH_EXTRAS, BENCH_LABEL.
bench: install
	$(BIN)/python -m bench.run

clean: down
	rm -rf .dual_db
