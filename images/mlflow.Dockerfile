# MLflow tracking server + model registry, with the PostgreSQL and S3 clients so the same
# image serves sqlite-on-a-volume and production backends. Built from the wheelhouse only:
#   docker build --build-arg BASE_IMAGE=... -f images/mlflow.Dockerfile wheelhouse/
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY . /wheelhouse
# --no-index: the build never reaches a package index, so it runs air-gapped.
RUN python3 -m venv /opt/mlflow \
 && /opt/mlflow/bin/pip install --no-index --find-links /wheelhouse --no-cache-dir \
      -c /wheelhouse/constraints.txt -r /wheelhouse/requirements-mlflow.txt \
 && /opt/mlflow/bin/pip uninstall --yes pip

FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group --home-dir /home/mlflow --create-home mlflow \
 && mkdir -p /mlflow && chown 10001:10001 /mlflow
COPY --from=build /opt/mlflow /opt/mlflow
# The job runner is off: with it the server forks a huey consumer (~2.5 GiB, slow start)
# for features this platform does not use.
ENV PATH=/opt/mlflow/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
USER 10001:10001
WORKDIR /mlflow
VOLUME /mlflow
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
ENTRYPOINT ["mlflow", "server"]
# --allowed-hosts must name every Host header clients use (service name *with* port),
# otherwise every API call is refused with 403 while /health still answers.
CMD ["--backend-store-uri", "sqlite:////mlflow/mlflow.db", "--artifacts-destination", "/mlflow/artifacts", \
     "--serve-artifacts", "--workers", "1", "--host", "0.0.0.0", "--port", "5000", \
     "--allowed-hosts", "localhost:5000,127.0.0.1:5000,mlflow:5000"]
