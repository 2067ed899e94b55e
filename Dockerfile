# syntax=docker/dockerfile:1
# dealflow: one image for every role; the command picks it:
#   dealflow serve --host 0.0.0.0 --port 8000 [--no-projections]   HTTP API (default CMD)
#   dealflow worker                                                 Temporal worker
#   dealflow projections run                                        projection runner
# Configuration comes from the environment: DATABASE_URL, TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
# DEALFLOW_BOOTSTRAP_TOKEN, DEALFLOW_METRICS_PORT (see deploy/README.md).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/dealflow
WORKDIR /src
# Only what the wheel needs (see .dockerignore): metadata first, then the packages.
COPY pyproject.toml README.md ./
COPY engine/ engine/
COPY workflows/ workflows/
COPY projections/ projections/
COPY dealflow/ dealflow/
RUN /opt/dealflow/bin/pip install . \
    && /opt/dealflow/bin/dealflow --help >/dev/null

FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="dealflow" \
      org.opencontainers.image.description="Event-sourced sales pipeline engine" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/dealflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEALFLOW_HOME=/var/lib/dealflow
RUN groupadd --system --gid 10001 dealflow \
    && useradd --system --uid 10001 --gid dealflow --home-dir /var/lib/dealflow --create-home \
       --shell /usr/sbin/nologin dealflow
COPY --from=build /opt/dealflow /opt/dealflow
USER 10001:10001
WORKDIR /var/lib/dealflow
EXPOSE 8000 9464
# Liveness of the API role; the worker/projections roles are probed by the orchestrator on
# DEALFLOW_METRICS_PORT instead (compose and k8s override this).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["dealflow"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
