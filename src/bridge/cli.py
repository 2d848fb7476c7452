"""``livekit-bridge``: run the bridge until SIGTERM/SIGINT.

With ``--dev-server`` (what ``nox -s bridge`` passes when ``LIVEKIT_URL`` is not set) a local LiveKit
server is built if needed, started on loopback, used as the default room server, and stopped on exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import replace

import trio
import trio_asyncio

from .app import serve
from .config import BridgeConfig, ConfigError
from .logs import configure_logging

__all__ = ["main"]

log = logging.getLogger("bridge")


async def _run(config: BridgeConfig) -> None:
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        state = await nursery.start(serve, config)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                state.request_shutdown()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livekit-bridge", description="LiveKit <-> gRPC audio bridge")
    parser.add_argument(
        "--dev-server",
        action="store_true",
        help="start a local LiveKit server (built on first use) and use it as LIVEKIT_URL",
    )
    args = parser.parse_args(argv)
    try:
        config = BridgeConfig.from_env()
    except ConfigError as err:
        print(f"livekit-bridge: {err}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_format)

    if not args.dev_server:
        trio.run(_run, config)
        return 0

    from .devserver import LocalLiveKitServer, ensure_server_binary

    ensure_server_binary()
    with LocalLiveKitServer(port=int(os.environ.get("BRIDGE_DEV_LIVEKIT_PORT", "7880"))) as lk:
        log.info(
            "local LiveKit server at %s (api key %s; dev secret in bridge/devserver.py; "
            "mint tokens with `python -m bridge.devserver token USER ROOM`)",
            lk.url,
            lk.api_key,
        )
        trio.run(_run, replace(config, livekit_url=lk.url))
    return 0
