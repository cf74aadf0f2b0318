# syntax=docker/dockerfile:1
# lossd server image: `lossd serve` on 0.0.0.0:50051, CPU torch, non-root, data in /data.
#
#   docker build -t lossd .                     (or: podman build --format docker -t lossd .)
#   docker run --rm -p 127.0.0.1:50051:50051 -v lossd-data:/data -e LOSSD_TOKEN="$(openssl rand -hex 32)" lossd
#
# Bound to 0.0.0.0, the server refuses to start without authentication: pass
# LOSSD_TOKEN (or mount a file and set LOSSD_TOKEN_FILE, or mutual TLS:
# LOSSD_TLS_CERT, LOSSD_TLS_KEY, LOSSD_TLS_CLIENT_CA), or LOSSD_INSECURE=1 to do
# without (a warning is logged). docs/security.md
#
# Needs BuildKit (docker 23+ by default) or podman/buildah: RUN --mount.
#
# Build arguments:
#   PYTHON_IMAGE  base image of the build and runtime stages; it needs python3
#                 (with venv), sh, groupadd/useradd.
#   TORCH_INDEX   where torch comes from; the default CPU index keeps the image
#                 small (PyPI's default torch wheel pulls in CUDA, gigabytes).
#                 e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
#   EXTRAS        lossd extras to install (default server,metrics)
#   WHEELS        offline install: a directory inside the build context (admitted
#                 by .dockerignore: .cache/image-test/wheels) holding wheels for
#                 every dependency, torch, setuptools and wheel included; pip then
#                 never touches an index. Empty (default): install from the
#                 indexes. `make image-test` uses it (deploy/image_test.sh).
#
# tests/repo/test_dockerfile.py checks this file's essentials, runs hadolint on
# it and runs its HEALTHCHECK command against a real server; `make image-test`
# builds and runs the image for real (docs/deployment.md).
ARG PYTHON_IMAGE=python:3.11-slim

# --- deps: constraints.txt and, with WHEELS set, the offline wheels. Mounted
# (never copied) by the stages below; its own stage, so that a source change
# does not invalidate the torch layer. With WHEELS empty this copies
# constraints.txt alone.
FROM scratch AS deps
ARG WHEELS=
COPY constraints.txt ${WHEELS} /wheels/

# --- build: lossd's own wheel from the sources, in /dist
FROM ${PYTHON_IMAGE} AS build
ARG WHEELS=
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY client ./client
COPY server ./server
# With WHEELS set, PIP_NO_INDEX/PIP_FIND_LINKS turn every pip call offline
# (pip hands them on to the isolated build environment too).
RUN --mount=type=bind,from=deps,source=/wheels,target=/wheels \
    if [ -n "${WHEELS}" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --no-deps --wheel-dir /dist .

# --- runtime: a venv at /opt/lossd with lossd[server,metrics] and pinned
# dependencies, installed from wheels mounted from the stages above (no
# sources, no build tools, no wheel files in the image); an unprivileged user.
FROM ${PYTHON_IMAGE} AS runtime
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=server,metrics
ARG WHEELS=
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PIP_NO_CACHE_DIR=1
RUN groupadd --gid 10001 lossd \
 && useradd --uid 10001 --gid lossd --home-dir /home/lossd --create-home --shell /usr/sbin/nologin lossd \
 && mkdir -p /data \
 && chown 10001:10001 /data \
 && python3 -m venv /opt/lossd
# Dependencies first, so that a code change does not reinstall torch: torch
# alone from TORCH_INDEX (the pin in constraints.txt, e.g. torch==2.13.0,
# matches the CPU index's 2.13.0+cpu). Byte-compiled in parallel (pip's own
# pass is serial), like pip skipping files that do not compile on this Python
# (torch ships some for newer ones): a read-only root cannot cache .pyc files.
RUN --mount=type=bind,from=deps,source=/wheels,target=/wheels \
    if [ -n "${WHEELS}" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi \
 && /opt/lossd/bin/pip install --no-compile --index-url "${TORCH_INDEX}" -c /wheels/constraints.txt torch \
 && /opt/lossd/bin/python -c "import compileall; compileall.compile_dir('/opt/lossd/lib', quiet=2, workers=0)"
# lossd's wheel with its extras; everything else from PyPI (or WHEELS).
RUN --mount=type=bind,from=deps,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/dist,target=/dist \
    if [ -n "${WHEELS}" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi \
 && set -- /dist/lossd-*.whl \
 && /opt/lossd/bin/pip install -c /wheels/constraints.txt "$1[${EXTRAS}]" \
 && /opt/lossd/bin/python -c "import torch, lossd.server; print('lossd.server ok, torch', torch.__version__)"
# LOSSD_GRACE_S stays below the engine's stop timeout (docker/podman stop: 10 s)
# so that draining ends before SIGKILL; raise both together (Kubernetes:
# terminationGracePeriodSeconds, see deploy/kubernetes/deployment.yaml).
ENV PATH=/opt/lossd/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOSSD_HOST=0.0.0.0 \
    LOSSD_PORT=50051 \
    LOSSD_GRACE_S=5 \
    LOSSD_DATA_DIR=/data
# SQLite job store and checkpoints (TrainJob). A named volume inherits the
# directory's owner (10001); a bind mount must be writable by uid 10001.
VOLUME ["/data"]
# Numeric, so that Kubernetes runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/lossd
EXPOSE 50051
# grpc.health.v1 Check through `lossd health` (shipped with lossd; exit 0 only
# when SERVING). Through sh, so that it follows a changed LOSSD_PORT.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "exec lossd --timeout 5 --target \"127.0.0.1:${LOSSD_PORT:-50051}\" health"]
# PID 1 is the Python server itself (exec form, no shell): it installs SIGTERM
# and SIGINT handlers (a PID 1 without handlers would ignore SIGTERM), stops
# accepting calls, drains in-flight ones for LOSSD_GRACE_S and exits 0, so
# `docker stop` is a clean shutdown (checked by `make image-test`). Arguments
# after the image name go to `lossd serve`, e.g. `docker run lossd --workers 8`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["lossd", "serve"]
