"""Who may call the bridge: TLS (optionally mutual) and/or a shared bearer token, or loopback only.

- A unix socket (``LIVEKIT_GRPC_SOCKET``) is protected by its file mode (0600): no token needed.
- TCP without TLS and without a token is allowed on loopback addresses only; config.py refuses a
  non-loopback ``BRIDGE_HOST`` otherwise, and start-up logs which protection is in force.
- With ``BRIDGE_AUTH_TOKEN``, every call must carry ``authorization: Bearer <token>``, except the
  standard health service (probes rarely carry credentials and learn nothing but "serving").
  Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ssl
from typing import Any

from grpclib.const import Status
from grpclib.events import RecvRequest, listen
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from .config import BridgeConfig

__all__ = ["describe_protection", "install_token_check", "server_ssl_context"]

_OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"


def server_ssl_context(config: BridgeConfig) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    context.set_alpn_protocols(["h2"])  # gRPC is HTTP/2 only
    if config.tls_client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(config.tls_client_ca)
    return context


def install_token_check(server: Server, token: str, on_reject: Any = None) -> None:
    """Refuse, with UNAUTHENTICATED, every call without ``authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    async def check(event: RecvRequest) -> None:
        if event.method_name.startswith(_OPEN_METHODS_PREFIX):
            return
        presented = event.metadata.get("authorization", "")
        if not hmac.compare_digest(str(presented).encode(), expected):
            if on_reject is not None:
                on_reject(event.method_name)
            raise GRPCError(Status.UNAUTHENTICATED, "missing or invalid bearer token")

    listen(server, RecvRequest, check)


def describe_protection(config: BridgeConfig) -> str:
    if config.grpc_socket:
        return "unix socket, owner-only (0600)"
    parts = []
    if config.tls_cert:
        parts.append("mutual TLS" if config.tls_client_ca else "TLS")
    if config.auth_token:
        parts.append("bearer token")
    if not parts:
        return "no TLS and no token: loopback only"
    return " + ".join(parts)
