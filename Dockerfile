# syntax=docker/dockerfile:1
# livekit-bridge image: `docker build -t livekit-bridge .` from the repository root.
#
# Two stages on the same slim Python base. The build stage runs deploy/docker/install.sh, which
# installs the hash-locked dependency set (deploy/requirements.lock; wheels only, so no compiler is
# needed in either stage) and the bridge's own wheel into /opt/livekit-bridge. The final stage copies
# that venv alone and runs as an unprivileged user. CI runs the same install script into a fresh venv
# and starts the bridge from it (nox -s deploy), since images are not built on the project's machines.
# Deployment notes (sidecar vs pool, sizing, WebRTC ports): docs/design/deploy.md.
#
# Pin the base by digest in your registry mirror for reproducible builds:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY deploy/requirements.lock deploy/requirements-build.lock deploy/
COPY deploy/docker/install.sh deploy/docker/
COPY pyproject.toml README.md ./
COPY src/ src/
RUN sh deploy/docker/install.sh /opt/livekit-bridge /src


FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="livekit-bridge" \
      org.opencontainers.image.description="Joins LiveKit rooms for a cloud backend and moves real-time audio over gRPC"

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid bridge --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin bridge

COPY --from=build /opt/livekit-bridge /opt/livekit-bridge
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/livekit-bridge-entrypoint
COPY --chmod=0644 deploy/docker/healthcheck.py /opt/livekit-bridge/healthcheck.py

ENV PATH=/opt/livekit-bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BRIDGE_LOG_FORMAT=json

USER 10001:10001
# gRPC (PORT); the metrics port is whatever BRIDGE_METRICS_PORT says (the chart uses 9100).
EXPOSE 9090

# grpc.health.v1 Check over whatever the bridge listens on (TCP or LIVEKIT_GRPC_SOCKET).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/livekit-bridge/bin/python", "/opt/livekit-bridge/healthcheck.py"]

# SIGTERM (docker stop, Kubernetes) makes the bridge drain: health turns NOT_SERVING, sessions get
# BRIDGE_SHUTDOWN_TIMEOUT_S to close, then it exits 0. Give it that long plus a margin.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/livekit-bridge-entrypoint"]
