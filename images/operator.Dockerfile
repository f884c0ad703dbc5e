# The FederatedTraining operator (kopf). Built from the wheelhouse only:
#   docker build --build-arg BASE_IMAGE=... -f images/operator.Dockerfile wheelhouse/
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY . /wheelhouse
# --no-index: the build never reaches a package index, so it runs air-gapped.
# pyarrow (a core dependency, for reading site data) is never imported by the operator
# and is the largest package, so it goes.
RUN python3 -m venv /opt/health-risk \
 && /opt/health-risk/bin/pip install --no-index --find-links /wheelhouse --no-cache-dir \
      -c /wheelhouse/constraints.txt "health-risk[operator,cli]" \
 && /opt/health-risk/bin/pip uninstall --yes pyarrow pip

FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group --home-dir /home/healthrisk --create-home healthrisk
COPY --from=build /opt/health-risk /opt/health-risk
ENV PATH=/opt/health-risk/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# kopf's liveness endpoint (`healthrisk operator run --liveness`).
EXPOSE 8090
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8090/healthz', timeout=4)"]
# `healthrisk operator run` (a one-command Typer app runs that command) without the
# umbrella `healthrisk` CLI: that one imports every
# subcommand, and the data loader's pyarrow is not in this image.
ENTRYPOINT ["python3", "-c", "from healthrisk_operator.cli import app; app(prog_name='healthrisk operator run')"]
