# Container images. Included by the top-level Makefile.
#
#   make wheels        every wheel the images need, into wheelhouse/ (needs the package index once)
#   make images        build all images from the wheelhouse with the local docker engine,
#                      offline, and print each image's size
#   make images-load   import them into the local harness node (cluster/load-image.sh)
#
# BASE_IMAGE defaults to the official python:3.11-slim; with no registry (the harness,
# an air-gapped site) use a local one: `make images BASE_IMAGE=local/python:3.11-slim`.
# The docker build context is the wheelhouse itself: nothing else is needed to build.

WHEELHOUSE     ?= $(CURDIR)/wheelhouse
IMAGE_PREFIX   ?= health-risk
IMAGE_TAG      ?= dev
BASE_IMAGE     ?= python:3.11-slim
# The base image's Python: the wheelhouse holds wheels for it, whatever Python runs make.
IMAGE_PYTHON   ?= 3.11
# Only the Prometheus image for the tests and compose starts from plain Debian.
DEBIAN_BASE_IMAGE ?= debian:bookworm-slim
DOCKER         ?= docker
DOCKER_BUILD_FLAGS ?= --network host
IMAGES         := operator flower drift inference mlflow
IMAGE_REFS      = $(foreach i,$(IMAGES),$(IMAGE_PREFIX)/$(i):$(IMAGE_TAG))
PROMETHEUS_IMAGE ?= $(IMAGE_PREFIX)/prometheus:$(IMAGE_TAG)

.PHONY: wheels images images-load image-prometheus image-stages $(addprefix image-,$(IMAGES))

# Third-party wheels change only with the pins; the project's own wheel with every edit,
# so it is rebuilt on each `make wheels` (a few seconds), in a folder of its own: the
# images' dependency stage never sees it, so a code edit rebuilds no dependency.
$(WHEELHOUSE)/.deps: constraints.txt pyproject.toml images/requirements-mlflow.txt | $(STAMP)
	mkdir -p $(WHEELHOUSE)
	$(BIN)/pip download --quiet --only-binary=:all: --python-version $(IMAGE_PYTHON) --dest $(WHEELHOUSE) \
	  -c constraints.txt ".[all]" -r images/requirements-mlflow.txt
	rm -f $(WHEELHOUSE)/health_risk-* $(WHEELHOUSE)/health-risk-*
	touch $@

# A fixed SOURCE_DATE_EPOCH makes the project's wheel byte-identical while its sources
# are, so docker's layer cache still holds after `make wheels`.
wheels: $(WHEELHOUSE)/.deps
	rm -rf $(WHEELHOUSE)/project
	SOURCE_DATE_EPOCH=315532800 $(BIN)/pip wheel --quiet --no-deps --wheel-dir $(WHEELHOUSE)/project .
	cp constraints.txt images/venv.sh $(WHEELHOUSE)/
	cp images/requirements-mlflow.txt $(WHEELHOUSE)/mlflow.in
	bash images/image-requirements.sh $(BIN)/pip $(WHEELHOUSE) $(IMAGE_PYTHON)
	@echo "wheelhouse: $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels, $$(du -sh $(WHEELHOUSE) | cut -f1)"

# One Dockerfile, one dependency stage for all four images (images/Dockerfile). The stage
# with every virtualenv is tagged too (never shipped): untagged, it and the dependency
# stage under it would go with the prune below, and the next build would start over.
image-stages: wheels
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) --target app \
	  -t $(IMAGE_PREFIX)/build-stages:$(IMAGE_TAG) -f images/Dockerfile $(WHEELHOUSE)

$(addprefix image-,$(IMAGES)): image-%: image-stages
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) --target $* \
	  -t $(IMAGE_PREFIX)/$*:$(IMAGE_TAG) -f images/Dockerfile $(WHEELHOUSE)

image-prometheus:
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) --build-arg BASE_IMAGE=$(DEBIAN_BASE_IMAGE) \
	  -t $(PROMETHEUS_IMAGE) -f images/prometheus.Dockerfile images

# Each code change leaves the previous build's stages untagged (~3 GB): drop those, keep
# the tagged images and the stages they still build on (the layer cache). A one-off build
# (CI: .ci/run) drops that cache too, IMAGE_BUILD_CACHE=drop: 3.5 GB less on disk while
# the cluster holds a second copy of the images.
IMAGE_BUILD_CACHE ?= keep
images: $(addprefix image-,$(IMAGES))
	@if [[ "$(IMAGE_BUILD_CACHE)" == drop ]]; then $(DOCKER) rmi $(IMAGE_PREFIX)/build-stages:$(IMAGE_TAG) >/dev/null; fi
	@$(DOCKER) image prune --force --filter label=io.health-risk.build=images | tail -1
	@echo "image sizes (base $(BASE_IMAGE): $$($(DOCKER) image inspect -f '{{.Size}}' $(BASE_IMAGE) | awk '{printf "%d MB", $$1/1e6}')):"
	@for ref in $(IMAGE_REFS); do \
	  $(DOCKER) image inspect -f '{{.Size}}' $$ref | awk -v ref=$$ref '{printf "  %-32s %4d MB\n", ref, $$1/1e6}'; \
	done

images-load:
	bash cluster/load-image.sh $(IMAGE_REFS) \
	  $$($(DOCKER) image inspect $(PROMETHEUS_IMAGE) >/dev/null 2>&1 && echo $(PROMETHEUS_IMAGE))

# The chart on a real cluster (tests/chart, marked `cluster`): brings the harness up,
# builds and loads the images, installs, tests, upgrades and uninstalls the chart.
.PHONY: chart-test
chart-test: install cluster-up
	KUBECONFIG=$${KUBECONFIG:-$(CURDIR)/.cluster/kubeconfig} $(BIN)/pytest -m cluster -p no:cacheprovider tests/chart
