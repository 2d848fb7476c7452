"""A minimal HTTP endpoint for Prometheus and probes, served by Trio in the bridge's own task tree.

Not prometheus_client's threaded server: scraping reads session state, and doing that in the Trio
thread needs no locks. One request per connection, bounded in size and time. GET only:

- ``/metrics``: Prometheus text format;
- ``/healthz``: 200 while the process serves (for liveness probes that cannot speak gRPC, e.g. when
  the bridge terminates TLS itself);
- ``/readyz``: 200 when the bridge takes new sessions, 503 with the reason when it is full,
  draining or shutting down (readiness: a load balancer stops sending new users).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import BridgeMetrics

__all__ = ["serve_metrics"]

log = logging.getLogger(__name__)

_MAX_REQUEST_BYTES = 8192
_REQUEST_TIMEOUT_S = 5.0


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _handle(stream: trio.SocketStream, metrics: BridgeMetrics, not_ready: Callable[[], str]) -> None:
    async with stream:
        request = b""
        with trio.move_on_after(_REQUEST_TIMEOUT_S):
            while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST_BYTES:
                data = await stream.receive_some(4096)
                if not data:
                    break
                request += data
        parts = request.split(b" ", 2)
        path = parts[1].split(b"?")[0] if len(parts) >= 2 and parts[0] == b"GET" else b""
        if path == b"/metrics":
            reply = _response("200 OK", CONTENT_TYPE_LATEST, generate_latest(metrics.prometheus))
        elif path == b"/healthz":
            reply = _response("200 OK", "text/plain", b"ok\n")
        elif path == b"/readyz":
            problem = not_ready()
            reply = (
                _response("503 Service Unavailable", "text/plain", problem.encode() + b"\n")
                if problem
                else _response("200 OK", "text/plain", b"ready\n")
            )
        else:
            reply = _response("404 Not Found", "text/plain", b"GET /metrics, /healthz or /readyz\n")
        with contextlib.suppress(trio.BrokenResourceError):  # the scraper hung up
            await stream.send_all(reply)


async def serve_metrics(
    metrics: BridgeMetrics,
    host: str,
    port: int,
    not_ready: Callable[[], str] = lambda: "",
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on host:port until cancelled; reports the bound port through ``task_status``.

    ``not_ready`` says why the bridge takes no new sessions now ("" when it does): ``/readyz``.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)

    async def handler(stream: trio.SocketStream) -> None:
        await _handle(stream, metrics, not_ready)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound)
