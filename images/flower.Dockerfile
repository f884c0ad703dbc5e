# Flower: SuperLink, SuperNode, the health-risk Flower App (ServerApp/ClientApp), the run
# submitter and the per-site drift check, all from one image since each runs the
# healthrisk package. The operator and compose choose the role by command:
#   flower-superlink ... | flower-supernode ... | healthrisk train submit ... | healthrisk drift check ...
# Built from the wheelhouse only:
#   docker build --build-arg BASE_IMAGE=... -f images/flower.Dockerfile wheelhouse/
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY . /wheelhouse
# --no-index: the build never reaches a package index, so it runs air-gapped. Flower's
# runtime dependency installation is disabled in the pods: everything is baked in here.
RUN python3 -m venv /opt/health-risk \
 && /opt/health-risk/bin/pip install --no-index --find-links /wheelhouse --no-cache-dir \
      -c /wheelhouse/constraints.txt "health-risk[federated,drift,cli]" \
 && /opt/health-risk/bin/pip uninstall --yes pip

FROM ${BASE_IMAGE}
# /data owned by the runtime user: a fresh named volume mounted there (compose) inherits it.
RUN useradd --uid 10001 --user-group --home-dir /home/healthrisk --create-home healthrisk \
 && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /opt/health-risk /opt/health-risk
# FLWR_HOME under /tmp: pods run with a read-only root filesystem and an emptyDir there.
ENV PATH=/opt/health-risk/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    FLWR_TELEMETRY_ENABLED=0 FLWR_HOME=/tmp/.flwr
USER 10001:10001
# SuperLink's one port (Fleet, Control and ServerAppIo share it in Flower 1.42).
EXPOSE 8000
# No HEALTHCHECK: the process differs per role; pods probe Flower's gRPC health service.
CMD ["flower-superlink", "--help"]
