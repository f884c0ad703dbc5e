# A python:3.11-slim-like image from Debian bookworm's own python3 (3.11), built
# without any registry: FROM the debootstrapped local/debian:bookworm.
ARG BASE=local/debian:bookworm
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
        python3-setuptools python3-wheel ca-certificates netbase tzdata \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 # like the official image: `python` and `pip` on PATH, pip may install system-wide
 && ln -sf /usr/bin/python3 /usr/local/bin/python \
 && ln -sf /usr/bin/pip3 /usr/local/bin/pip \
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED
CMD ["python3"]
