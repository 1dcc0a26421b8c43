# RaDialog server image: the app's runtime environment and the small synthetic-data demo checkpoint; no
# test tools. Real weights are NOT in the image; mount them read-only at /app/checkpoints (see
# checkpoints/README.md and docker-compose.yml). BASE_IMAGE lets scripts/docker_smoke.sh build on a local
# base where the registry cannot be reached.
ARG BASE_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RADIALOG_CHECKPOINT=/app/checkpoints/radialog-v1

# Python 3.11 (the project supports 3.11 to 3.13) and curl for the health check.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 radialog \
    && mkdir -p /app/checkpoints /app/data \
    && chown -R radialog:radialog /app
WORKDIR /app
USER 1000:1000

# scripts/install.sh as CI runs it, runtime part only: /app/.venv with the package and its app extra.
COPY --chown=1000:1000 . /app
RUN bash scripts/install.sh --runtime

# Studies (the SQLite database: images, reports, conversations) outlive the container in /app/data.
ENV RADIALOG_DATA_DIR=/app/data
VOLUME ["/app/checkpoints", "/app/data"]
EXPOSE 7860
# Readiness, not liveness: /readyz answers 503 until the model has loaded, and for good if it failed to.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["curl", "--fail", "--silent", "http://localhost:7860/readyz"]

ENTRYPOINT ["/app/.venv/bin/radialog"]
CMD ["serve", "--host", "0.0.0.0", "--port", "7860"]
