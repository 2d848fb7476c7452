"""Exit 0 if the bridge in this container answers grpc.health.v1 Check with SERVING, else 1.

The image's HEALTHCHECK, and the Helm chart's exec probe for the sidecar shape (a unix socket, which
Kubernetes' native gRPC probe cannot reach). Run with the bridge's own venv python; it reads the
bridge's settings from the same environment, so it needs no arguments:

- ``LIVEKIT_GRPC_SOCKET`` set: the unix socket;
- else ``BRIDGE_HOST``:``PORT`` (a wildcard host is checked on loopback);
- ``BRIDGE_TLS_CERT`` set: TLS without verifying the certificate (the probe sends no secret and
  only reads its own process's status). With ``BRIDGE_TLS_CLIENT_CA`` (mutual TLS) it cannot log in:
  use the HTTP probes on the metrics port there.

Health needs no bearer token (see README, Access control). ``--service NAME`` checks one service
(default: the overall status, which turns NOT_SERVING as soon as the bridge starts draining).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys

from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def _channel() -> Channel:
    socket_path = os.environ.get("LIVEKIT_GRPC_SOCKET")
    if socket_path:
        return Channel(path=socket_path)
    host = os.environ.get("BRIDGE_HOST", "127.0.0.1")
    host = _WILDCARDS.get(host, host)
    port = int(os.environ.get("PORT", "9090"))
    if not os.environ.get("BRIDGE_TLS_CERT"):
        return Channel(host, port)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return Channel(host, port, ssl=context)


async def _check(service: str, timeout: float) -> str:
    channel = _channel()
    try:
        reply = await HealthStub(channel).Check(HealthCheckRequest(service=service), timeout=timeout)
        return str(HealthCheckResponse.ServingStatus.Name(reply.status))
    finally:
        channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", default="", help="service to check (default: overall)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args()
    try:
        status = asyncio.run(_check(args.service, args.timeout))
    except Exception as exc:  # any failure to get an answer is "unhealthy", said in one line
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
