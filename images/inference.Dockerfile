# The inference service (FastAPI on :8080). Built from the wheelhouse only:
#   docker build --build-arg BASE_IMAGE=... -f images/inference.Dockerfile wheelhouse/
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY . /wheelhouse
# --no-index: the build never reaches a package index, so it runs air-gapped.
# pyarrow (a core dependency, for reading site data) is never imported by the service and
# is the largest package, so it goes.
RUN python3 -m venv /opt/health-risk \
 && /opt/health-risk/bin/pip install --no-index --find-links /wheelhouse --no-cache-dir \
      -c /wheelhouse/constraints.txt "health-risk[inference,cli]" \
 && /opt/health-risk/bin/pip uninstall --yes pyarrow setuptools pip \
 && site=/opt/health-risk/lib/python3.11/site-packages \
 # Headers, Cython sources and the packages' own test suites are never used at run time.
 && rm -rf "$site"/scipy/*/tests "$site"/scipy/*/*/tests "$site"/sklearn/*/tests "$site"/sklearn/tests \
      "$site"/numpy/*/tests "$site"/numpy/tests "$site"/pandas/tests \
 && find "$site" \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' \) -delete \
 # The model-loading stack ships as bytecode only: same import speed on a read-only root
 # (nothing to compile at run time), half the bytes. Together these keep the image under
 # its 500 MB budget.
 && for pkg in mlflow scipy pandas sklearn databricks; do \
      python3 -m compileall -b -q "$site/$pkg" \
      && find "$site/$pkg" -name '*.py' -delete \
      && find "$site/$pkg" -name __pycache__ -type d -prune -exec rm -rf {} +; \
    done

FROM ${BASE_IMAGE}
# A fixed uid so the chart's runAsUser and file ownership agree on every base image.
RUN useradd --uid 10001 --user-group --home-dir /home/healthrisk --create-home healthrisk
COPY --from=build /opt/health-risk /opt/health-risk
ENV PATH=/opt/health-risk/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
# `healthrisk serve` without the umbrella `healthrisk` CLI: that one imports every
# subcommand, and the data loader's pyarrow is not in this image.
ENTRYPOINT ["python3", "-c", "from healthrisk_inference.cli import app; app(prog_name='healthrisk serve')", \
            "--host", "0.0.0.0", "--port", "8080"]
