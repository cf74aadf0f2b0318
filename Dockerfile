# syntax=docker/dockerfile:1
# lossd server image: `lossd serve` on 0.0.0.0:50051, CPU torch, non-root.
#
#   docker build -t lossd .
#   docker run --rm -p 50051:50051 lossd
#
# Build arguments:
#   PYTHON_IMAGE  base image of both stages (same Python in both: the venv is copied)
#   TORCH_INDEX   where torch comes from; the default CPU index keeps the image
#                 small (PyPI's default torch wheel pulls in CUDA, gigabytes)
#
# tests/unit/test_dockerfile.py checks this file's essentials and runs its
# HEALTHCHECK command against a real server (no Docker engine is needed there).
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv at /opt/lossd with lossd[server] and pinned dependencies
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/lossd
WORKDIR /src
# Dependencies first, so that a code change does not reinstall torch.
COPY constraints.txt ./
# torch alone from the CPU index (the pin in constraints.txt, e.g. torch==2.13.0,
# matches the index's 2.13.0+cpu); everything else from PyPI below.
RUN /opt/lossd/bin/pip install --index-url "${TORCH_INDEX}" -c constraints.txt torch
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY client ./client
COPY server ./server
RUN /opt/lossd/bin/pip install -c constraints.txt ".[server]" \
 && /opt/lossd/bin/python -c "import torch, lossd.server; print('lossd.server ok, torch', torch.__version__)"

# --- runtime: the venv, an unprivileged user, nothing else
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 lossd \
 && useradd --system --uid 10001 --gid lossd --home-dir /home/lossd --create-home --shell /usr/sbin/nologin lossd
COPY --from=build /opt/lossd /opt/lossd
ENV PATH=/opt/lossd/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOSSD_HOST=0.0.0.0 \
    LOSSD_PORT=50051
# Numeric, so that Kubernetes runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/lossd
EXPOSE 50051
# grpc.health.v1 Check of lossd.v1.LossService; exit 0 only when SERVING.
# Plain python + grpc_health (from lossd[server]) so it depends on no CLI
# command. Target: LOSSD_HEALTH_TARGET, else 127.0.0.1:$LOSSD_PORT.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; t = os.environ.get('LOSSD_HEALTH_TARGET') or '127.0.0.1:' + os.environ.get('LOSSD_PORT', '50051'); r = g.HealthStub(grpc.insecure_channel(t)).Check(h.HealthCheckRequest(service='lossd.v1.LossService'), timeout=5); sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"]
# PID 1 is the Python server itself (exec form, no shell): it handles SIGTERM
# and SIGINT (drains in-flight calls for LOSSD_GRACE_S, then exits), so
# `docker stop` is a clean shutdown. Arguments after the image name go to
# `lossd serve`, e.g. `docker run lossd --workers 8`.
ENTRYPOINT ["lossd", "serve"]
