# health-risk — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration lint typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all,dev]"
	touch $@

## The main job on one machine: data → Flower → MLflow → promotion → predictions.
demo: install
	$(BIN)/healthrisk demo

## Everything CI runs.
test: install
	FLWR_TELEMETRY_ENABLED=0 $(BIN)/pytest -m "not cluster" tests

test-unit: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check src services operator tests benchmarks
	$(BIN)/ruff format --check src services operator tests benchmarks

typecheck: install
	$(BIN)/mypy src services operator

clean:
	rm -rf $(VENV) .state build *.egg-info

-include cluster/cluster.mk
-include images/images.mk
