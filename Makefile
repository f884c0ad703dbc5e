# health-risk — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

ACTIONLINT_VERSION := v1.7.12

.PHONY: install demo test test-local test-cluster test-cluster-platform test-cluster-operator e2e test-unit lint actionlint typecheck clean \
	prereqs prereqs-cluster python-versions

install: $(STAMP)

## What must be on the machine before anything else (scripts/prereqs.sh says how to get it).
prereqs:
	@PYTHON="$(PYTHON)" bash scripts/prereqs.sh local
prereqs-cluster:
	@PYTHON="$(PYTHON)" bash scripts/prereqs.sh cluster

$(STAMP): pyproject.toml constraints.txt | prereqs
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all,dev]"
	touch $@

## The main job on one machine: data → Flower → MLflow → promotion → predictions.
demo: install
	$(BIN)/healthrisk demo

## Everything CI runs: lint and types, then the local suite beside everything on a real
## Kubernetes (two jobs: the cluster suite mostly waits on pods; each suite's output is
## printed whole when it ends).
test: prereqs-cluster lint typecheck
	$(MAKE) --no-print-directory -j2 --output-sync=target test-local test-cluster

## Unit and integration tests (real MLflow, Flower and uvicorn processes on 127.0.0.1).
test-local: install
	FLWR_TELEMETRY_ENABLED=0 $(BIN)/pytest -m "not cluster" --durations=15 tests

## On the harness cluster (or any cluster KUBECONFIG points at): cluster smoke tests,
## chart, operator and end to end. A suite that needs the platform's images builds them
## from the wheelhouse and loads them into the cluster when they are missing or stale
## (tests/kit/images.py), whatever ran before it.
## Two steps: first every test that installs a chart or replaces the CRD (the lifecycle
## tests install the previous chart's), then the end-to-end platform story, which mostly
## waits for drift intervals, beside the operator's tests, which share only today's CRD
## with it (each operator watches its own namespace). Every step runs; any failure fails.
KUBECONFIG_FOR_TESTS = $${KUBECONFIG:-$(CURDIR)/.cluster/kubeconfig}
PYTEST_ON_CLUSTER = KUBECONFIG=$(KUBECONFIG_FOR_TESTS) PATH=$(CURDIR)/.cluster/bin:$$PATH \
  $(BIN)/pytest -m cluster --durations=25
test-cluster: install cluster-up
	@status=0; \
	$(PYTEST_ON_CLUSTER) --ignore=tests/e2e/test_platform.py --ignore=tests/operator tests || status=$$?; \
	$(MAKE) --no-print-directory -j2 --output-sync=target test-cluster-platform test-cluster-operator \
	  || status=$$?; \
	exit $$status

test-cluster-platform: install cluster-up
	$(PYTEST_ON_CLUSTER) tests/e2e/test_platform.py

test-cluster-operator: install cluster-up
	$(PYTEST_ON_CLUSTER) tests/operator

## The end-to-end suite alone (it builds and loads its images itself).
e2e: install cluster-up
	KUBECONFIG=$(KUBECONFIG_FOR_TESTS) PATH=$(CURDIR)/.cluster/bin:$$PATH \
	  $(BIN)/pytest -m e2e tests/e2e

test-unit: install
	$(BIN)/pytest tests/unit

lint: install actionlint
	$(BIN)/ruff check src services operator tests benchmarks
	$(BIN)/ruff format --check src services operator tests benchmarks

## The GitHub workflows (and, where shellcheck is installed, their shell steps).
actionlint: $(BIN)/actionlint
	$(BIN)/actionlint -no-color

$(BIN)/actionlint: | $(STAMP)
	GOBIN=$(CURDIR)/$(BIN) GOFLAGS=-buildvcs=false go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

## Every pinned dependency has a binary wheel for these Pythons (resolved, not installed).
PYTHON_VERSIONS ?= 3.12 3.13
python-versions: install
	@mkdir -p build; for v in $(PYTHON_VERSIONS); do \
	  $(BIN)/pip install --quiet --dry-run --ignore-installed --only-binary=:all: --python-version $$v \
	    --target $$(mktemp -d) --report build/python-$$v.json -c constraints.txt \
	    ".[all,dev]" -r images/requirements-mlflow.txt && \
	  $(BIN)/python -c "import json, sys; r = json.load(open(sys.argv[1])); \
	    print(f'Python {sys.argv[2]}: {len(r[\"install\"])} packages resolve to binary wheels')" build/python-$$v.json $$v \
	  || exit 1; done

typecheck: install
	$(BIN)/mypy src services operator

clean:
	rm -rf $(VENV) .state build *.egg-info

-include cluster/cluster.mk
-include images/images.mk
