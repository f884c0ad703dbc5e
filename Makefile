# health-risk — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-local test-cluster e2e test-unit lint typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "need Python 3.11 (python3.11) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all,dev]"
	touch $@

## The main job on one machine: data → Flower → MLflow → promotion → predictions.
demo: install
	$(BIN)/healthrisk demo

## Everything CI runs: the local suite, then everything that needs a real Kubernetes.
test: test-local test-cluster

## Unit and integration tests (real MLflow, Flower and uvicorn processes on 127.0.0.1).
test-local: install
	FLWR_TELEMETRY_ENABLED=0 $(BIN)/pytest -m "not cluster" tests

## On the harness cluster (or any cluster KUBECONFIG points at): cluster smoke tests,
## operator, chart and end to end. Images are built and loaded by the tests' fixtures.
KUBECONFIG_FOR_TESTS = $${KUBECONFIG:-$(CURDIR)/.cluster/kubeconfig}
test-cluster: install cluster-up
	KUBECONFIG=$(KUBECONFIG_FOR_TESTS) PATH=$(CURDIR)/.cluster/bin:$$PATH \
	  $(BIN)/pytest -m "cluster and not e2e" tests
	$(MAKE) e2e

e2e: install cluster-up
	KUBECONFIG=$(KUBECONFIG_FOR_TESTS) PATH=$(CURDIR)/.cluster/bin:$$PATH \
	  $(BIN)/pytest -m e2e tests/e2e

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
