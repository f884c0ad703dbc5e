# Prometheus from Debian's own package: for clusters and compose stacks that cannot pull
# the official prom/prometheus image (the test harness, air-gapped sites).
#   docker build --build-arg BASE_IMAGE=debian:bookworm-slim -f images/prometheus.Dockerfile images/
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
LABEL io.health-risk.build=images
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && mkdir -p /prometheus /etc/prometheus \
 && chown 65534:65534 /prometheus
COPY prometheus.yml /etc/prometheus/prometheus.yml
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
# Same entrypoint and default flags as the official image, so the chart drives either.
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
