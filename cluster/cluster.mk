# Local single-node Kubernetes for the tests. Included by the top-level
# Makefile (`-include cluster/cluster.mk`). Everything here is about the cluster.
#
#   make cluster-up       build/fetch (cached in /var/cache/health-risk) and start it;
#                         prints the kubeconfig path (.cluster/kubeconfig)
#   make cluster-down     stop everything it started, by pid; nothing left behind
#   make cluster-test     cluster-up, then the smoke + teardown tests in tests/cluster
#   make cluster-images   only build the local images (debian, python, pause, add-ons)
#   make cluster-status   what is running and how much memory it uses
#
# Other clusters: KUBECONFIG=/path/to/kubeconfig make cluster-test-only

CLUSTER_SH      := $(CURDIR)/cluster
CLUSTER_PY      ?= $(CURDIR)/.venv/bin/python
CLUSTER_PYTEST_ARGS ?=
# The suite needs pytest and, from the product, only healthrisk.contracts (standard library
# only), so it runs from the source tree in a venv that holds just pytest.
CLUSTER_PYTEST  = PYTHONPATH=$(CURDIR)/src$${PYTHONPATH:+:$$PYTHONPATH} $(CLUSTER_PY) -m pytest

.PHONY: cluster-up cluster-down cluster-test cluster-test-only cluster-images cluster-status docker-up cluster-pytest-deps

cluster-up: prereqs-cluster
	@bash $(CLUSTER_SH)/up.sh

cluster-down:
	@bash $(CLUSTER_SH)/down.sh

docker-up:
	@bash $(CLUSTER_SH)/docker-up.sh

cluster-images:
	@bash $(CLUSTER_SH)/build-images.sh all

cluster-status:
	@bash $(CLUSTER_SH)/status.sh

# pytest (+ pytest-timeout) in the project venv; install them if the venv lacks them
cluster-pytest-deps:
	@test -x $(CLUSTER_PY) || { test -x $(CURDIR)/.venv/bin/python || python3 -m venv $(CURDIR)/.venv; }
	@$(CLUSTER_PY) -c "import pytest, pytest_timeout" 2>/dev/null || \
	  $(CLUSTER_PY) -m pip install --quiet "pytest>=8" "pytest-timeout>=2.3"

cluster-test: cluster-up cluster-pytest-deps
	KUBECONFIG=$${KUBECONFIG:-$(CURDIR)/.cluster/kubeconfig} $(CLUSTER_PYTEST) -m cluster \
	  -p no:cacheprovider --confcutdir=$(CURDIR)/tests/cluster $(CLUSTER_PYTEST_ARGS) $(CURDIR)/tests/cluster

cluster-test-only: cluster-pytest-deps
	$(CLUSTER_PYTEST) -m cluster -p no:cacheprovider --confcutdir=$(CURDIR)/tests/cluster $(CLUSTER_PYTEST_ARGS) $(CURDIR)/tests/cluster
