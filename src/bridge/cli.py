"""``livekit-bridge``: run the bridge until SIGTERM/SIGINT.

With ``--dev-server`` (what ``nox -s bridge`` passes when ``LIVEKIT_URL`` is not set) a local LiveKit
server is built if needed, started on loopback, used as the default room server, and stopped on exit.

Every start-up failure (a setting, a port in use, a certificate, the dev server) ends as one line on
stderr naming the cause and the setting, with exit status 2: never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import fields, replace

import trio
import trio_asyncio

from .app import BridgeState, serve
from .config import BridgeConfig, ConfigError, env_name
from .errors import StartupError
from .logs import configure_logging
from .settings_table import plain_table
from .version import __version__

__all__ = ["main"]

log = logging.getLogger("bridge")

_SECRET_SETTINGS = frozenset({"auth_token"})
EXIT_STARTUP_FAILED = 2


async def _run(config: BridgeConfig) -> None:
    """Serve until a signal: the first drains (BRIDGE_DRAIN_TIMEOUT_S), a second stops at once."""
    listening = trio.CancelScope()

    async def serve_then_stop_listening(task_status: trio.TaskStatus[BridgeState]) -> None:
        try:
            await serve(config, task_status=task_status)
        finally:
            listening.cancel()

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            state: BridgeState = await nursery.start(serve_then_stop_listening)
            with listening:
                async for signum in signals:
                    again = " again: stopping now" if state.shutdown_requested else ": draining"
                    log.info("received %s%s", signal.Signals(signum).name, again)
                    state.request_shutdown()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livekit-bridge",
        description="Joins LiveKit rooms for a cloud backend and moves real-time audio over gRPC. "
        "Configured by environment variables (below); the README has the same table.",
        epilog="settings (environment variables):\n" + plain_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dev-server",
        action="store_true",
        help="start a local LiveKit server (built on first use) and use it as LIVEKIT_URL",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration (secrets redacted) and exit",
    )
    parser.add_argument("--version", action="version", version=f"livekit-bridge {__version__}")
    return parser


def _describe(config: BridgeConfig) -> str:
    lines = []
    for setting in fields(config):
        value = getattr(config, setting.name)
        if setting.name in _SECRET_SETTINGS and value:
            value = "<redacted>"
        lines.append(f"{env_name(setting.name)}={value}")
    return "\n".join(lines)


def _fail(message: str) -> int:
    print(f"livekit-bridge: {message}", file=sys.stderr)
    return EXIT_STARTUP_FAILED


def _startup_error(exc: BaseException) -> StartupError | None:
    """The StartupError that ended the run, also when Trio wrapped it in exception groups."""
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _startup_error(inner)
            if found is not None:
                return found
    return None


def _serve_until_signalled(config: BridgeConfig) -> int:
    try:
        trio.run(_run, config)
    except BaseException as exc:
        failure = _startup_error(exc)
        if failure is None:
            raise
        return _fail(str(failure))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = BridgeConfig.from_env()
    except ConfigError as err:
        return _fail(str(err))
    if args.print_config:
        print(_describe(config))
        return 0
    configure_logging(config.log_level, config.log_format)

    if not args.dev_server:
        return _serve_until_signalled(config)

    from .testing.devserver import DevServerError, LocalLiveKitServer, ensure_server_binary

    port_text = os.environ.get("BRIDGE_DEV_LIVEKIT_PORT", "7880")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return _fail(f"BRIDGE_DEV_LIVEKIT_PORT={port_text!r} is not a port number")
    try:
        ensure_server_binary()
        with LocalLiveKitServer(port=int(port_text)) as lk:
            log.info(
                "local LiveKit server at %s (api key %s; dev secret in bridge/testing/devserver.py; "
                "mint tokens with `python -m bridge.testing.devserver token USER ROOM`)",
                lk.url,
                lk.api_key,
            )
            return _serve_until_signalled(replace(config, livekit_url=lk.url))
    except DevServerError as err:
        return _fail(f"the local LiveKit server (--dev-server, BRIDGE_DEV_LIVEKIT_PORT) failed: {err}")
