"""The root of the bridge's task tree.

::

    trio.run(cli._main)
    └── trio_asyncio.open_loop()            hosts grpclib and the livekit SDK
        └── serve(config)
            ├── grpclib Server (asyncio side): one handler task per call, each crossing into Trio once
            └── sessions nursery
                └── BridgeSession.run (one per user; its own task tree: see session/core.py)

``serve`` must run inside ``trio_asyncio.open_loop()``. When ``BridgeState.request_shutdown`` is
called (the CLI does so on SIGTERM/SIGINT) it drains: health flips to NOT_SERVING, new JoinRooms are
refused, and each session is handed over (its room audio flushed, its stream ended with UNAVAILABLE
"draining") once its playbacks have finished, all of them by ``BRIDGE_DRAIN_TIMEOUT_S``. A second
request, or cancellation, skips the drain: every session left is closed with a deadline (streams end
with UNAVAILABLE "bridge shutting down"), then the gRPC server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import stat
from collections.abc import Iterator
from typing import cast

import trio
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server
from trio_asyncio import aio_as_trio

from . import aio_batching
from .access import describe_protection, install_token_check, server_ssl_context
from .capacity import raise_open_file_limit
from .config import BridgeConfig
from .errors import StartupError
from .fetch import Fetcher, FetchLimits, HostPolicy
from .livekit_io.native_library import choose_native_library
from .livekit_io.pacing import native_memory_gate
from .metrics import BridgeMetrics
from .metrics_server import serve_metrics
from .playback import PlaybackLimits, PlaybackServices, PlaybackStats
from .redact import forget_secret, remember_secret
from .registry import SessionRegistry
from .rpc.server import BoundedHealth, BridgeServer
from .rpc.service import LiveKitBridgeService
from .session import CloseReason, RoomFactory
from .state import BridgeState
from .version import __version__

__all__ = ["BridgeState", "serve"]  # BridgeState lives in state.py; re-exported for callers

log = logging.getLogger(__name__)

_SERVER_CLOSE_TIMEOUT_S = 2.0


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    """Create the unix socket owner-only (0600), with no window where it is wider."""
    old = os.umask(0o177)
    try:
        yield
    finally:
        os.umask(old)


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"LIVEKIT_GRPC_SOCKET={path} exists and is not a socket; refusing to remove it")
    os.unlink(path)


async def _start_server(config: BridgeConfig, state: BridgeState) -> Server:
    """Create and start the grpclib server (asyncio side)."""
    # Importing the plain descriptor module registers our proto in protobuf's default pool, which
    # grpclib's reflection reads (betterproto2 registers nothing there): needed for `grpcurl describe`.
    from ._gen import livekit_bridge_pb2  # noqa: F401

    bridge = LiveKitBridgeService(state)
    state.health.set(True)
    health = state.health_service = BoundedHealth(
        {bridge: [state.health]}, max_watches=config.max_health_watches
    )
    services = ServerReflection.extend([bridge, health])
    server = BridgeServer(
        services,
        max_streams_per_connection=config.max_streams_per_connection,
        max_message_bytes=config.max_message_bytes,
    )
    if config.auth_token:
        rejected = state.metrics.auth_rejected
        install_token_check(server, config.auth_token, on_reject=lambda method: rejected.labels(method).inc())
    if config.grpc_socket:
        try:
            _remove_stale_socket(config.grpc_socket)
            with _private_umask():
                await server.start(path=config.grpc_socket)
        except OSError as err:
            raise StartupError(
                f"cannot listen on {config.grpc_socket} (LIVEKIT_GRPC_SOCKET): {err}"
            ) from None
        state.address = f"unix:{config.grpc_socket}"
    else:
        ssl_context = _checked_ssl_context(config)
        try:
            await server.start(config.host, config.port, ssl=ssl_context)
        except OSError as err:
            raise StartupError(
                f"cannot listen on {config.host}:{config.port} (BRIDGE_HOST, PORT): {err.strerror or err}"
            ) from None
        # grpclib does not expose the bound address; port 0 (tests) needs it.
        listener = cast(asyncio.Server, server._server)
        host, port = listener.sockets[0].getsockname()[:2]
        state.address = f"{host}:{port}"
    return server


def _checked_ssl_context(config: BridgeConfig) -> ssl.SSLContext | None:
    try:
        return server_ssl_context(config)
    except (OSError, ssl.SSLError) as err:
        client_ca = f" or BRIDGE_TLS_CLIENT_CA={config.tls_client_ca}" if config.tls_client_ca else ""
        raise StartupError(
            f"cannot load BRIDGE_TLS_CERT={config.tls_cert} / BRIDGE_TLS_KEY={config.tls_key}{client_ca}: "
            f"{getattr(err, 'strerror', None) or err}"
        ) from None


async def _start_metrics(
    nursery: trio.Nursery, metrics: BridgeMetrics, registry: SessionRegistry, config: BridgeConfig
) -> int:
    try:
        port: int = await nursery.start(
            serve_metrics, metrics, config.metrics_host, config.metrics_port, registry.not_ready_reason
        )
    except OSError as err:
        raise StartupError(
            f"cannot serve metrics on {config.metrics_host}:{config.metrics_port} "
            f"(BRIDGE_METRICS_HOST, BRIDGE_METRICS_PORT): {err.strerror or err}"
        ) from None
    return port


async def _let_streams_finish(state: BridgeState) -> None:
    """Give ended streams a moment to send their status before the server cancels their handlers."""
    if state.active_streams:
        with trio.move_on_after(_SERVER_CLOSE_TIMEOUT_S):
            await state._no_streams.wait()


async def _stop_server(server: Server) -> None:
    server.close()
    # wait_closed() can hang with streams still open on Python 3.12+: bound it.
    with trio.move_on_after(_SERVER_CLOSE_TIMEOUT_S):
        await aio_as_trio(server.wait_closed)()


async def _playback_services(config: BridgeConfig) -> PlaybackServices:
    """The process's fetcher for PlayAudio (asyncio side: each fetch opens its own httpx client)."""
    limits = FetchLimits(
        connect_timeout_s=config.fetch_connect_timeout_s,
        read_timeout_s=config.fetch_read_timeout_s,
        max_redirects=config.fetch_max_redirects,
        max_bytes=config.fetch_max_bytes,
        total_timeout_s=config.fetch_total_timeout_s,
        max_concurrent=config.fetch_max_concurrent,
        max_per_session=config.max_playbacks_per_session,
        resolver_threads=config.fetch_resolver_threads,
    )
    return PlaybackServices(
        client=Fetcher(HostPolicy.parse(config.fetch_allow_hosts), limits),
        limits=PlaybackLimits(
            max_duration_ms=config.speaker_max_duration_ms,
            progress_ms=config.playback_progress_ms,
        ),
        stats=PlaybackStats(),
    )


async def serve(
    config: BridgeConfig,
    *,
    room_factory: RoomFactory | None = None,
    task_status: trio.TaskStatus[BridgeState] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until shut down. ``room_factory`` replaces the LiveKit room link (tests without LiveKit)."""
    remember_secret(config.auth_token)
    library = choose_native_library(config.webrtc_log_sink)  # before anything loads the SDK's library
    log.info("SDK native library: %s (%s)", library.path or "the wheel's own", library.reason)
    raise_open_file_limit()  # before the registry sizes itself by it
    native_memory_gate().configure(headroom_mib=config.native_memory_headroom_mib)
    aio_batching.install(config.asyncio_batch)  # patches the loop this runs on, from its next pass
    playback = await aio_as_trio(_playback_services)(config)
    try:
        await _serve(config, playback, room_factory, task_status)
    finally:
        forget_secret(config.auth_token)
        with trio.CancelScope(shield=True), trio.move_on_after(_SERVER_CLOSE_TIMEOUT_S):
            await aio_as_trio(playback.client.aclose)()


async def _serve(
    config: BridgeConfig,
    playback: PlaybackServices,
    room_factory: RoomFactory | None,
    task_status: trio.TaskStatus[BridgeState],
) -> None:
    async with trio.open_nursery() as sessions_nursery:
        metrics = BridgeMetrics()
        registry = SessionRegistry(config, sessions_nursery, playback, metrics, room_factory=room_factory)
        metrics.attach(registry)  # metrics read the sessions' snapshots through the registry
        playback.stats.observer = metrics
        state = BridgeState(config, registry, metrics)
        server = await aio_as_trio(_start_server)(config, state)
        try:
            if config.metrics_port:
                state.metrics_port = await _start_metrics(sessions_nursery, metrics, registry, config)
            log.info(
                "livekit-bridge %s listening on %s (%s); capacity %d sessions",
                __version__,
                state.address,
                describe_protection(config),
                state.registry.capacity,
            )
            task_status.started(state)
            await state._shutdown.wait()
            state.health.set(False)
            await state.registry.drain(config.drain_timeout_s, state._now)
            log.info("shutting down")
        finally:
            with trio.CancelScope(shield=True):
                state.health.set(False)
                state.registry.shutting_down = True
                await state.registry.close_all(CloseReason.SHUTDOWN, config.shutdown_timeout_s)
                await _let_streams_finish(state)
                await _stop_server(server)
                if config.grpc_socket:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(config.grpc_socket)
            sessions_nursery.cancel_scope.cancel()
