"""Soak: sessions join and leave continuously for a bounded time; RSS and task counts over time.

    python -m bench.soak [--seconds 600] [--sessions 8] [--sample-every 5] [--idle-ttl 3]
                          [--kinds leave,play_stop,...] [--floor]

bench.soak.driver runs it, bench.soak.report prints it; the JSON, the PNG and the bridge's log go to
bench/results/soak-<time>/ (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.lib import REPO_ROOT, Children, run_on_asyncio
from bench.soak.driver import KINDS, SoakSettings, run_soak
from bench.soak.measure import SoakResult
from bench.soak.report import format_report, plot


async def _run_watched(settings: SoakSettings, server: Any) -> SoakResult:
    """run_soak, with a watchdog that kills our LiveKit server should this process be killed."""
    if server is None or server.process is None:
        return await run_soak(settings)
    children = Children()
    watchdog = await children.watch(server.process.pid, str(server.log_path.parent))
    try:
        return await run_soak(settings)
    finally:
        await children.disarm(watchdog)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long sessions churn (max 4 h)")
    parser.add_argument("--sessions", type=int, default=8, help="session slots churning at once")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--idle-ttl", type=float, default=3.0, help="BRIDGE_SESSION_IDLE_TTL_S of the bridge")
    parser.add_argument("--warmup", type=float, default=None, help="seconds left out of the fits")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated cycle kinds to run (default: all of {','.join(KINDS)})",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="then run the same churn on bare rtc.Rooms (no bridge) for as long, and compare",
    )
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results"), help="logs and JSON")
    parser.add_argument(
        "--livekit-url", default="", help="use this LiveKit server (dev keys) instead of a local one"
    )
    args = parser.parse_args()
    if not 0 < args.seconds <= 4 * 3600:
        parser.error("--seconds must be in (0, 14400]")
    kinds = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds must name some of {','.join(KINDS)}")
    if not 1 <= args.sessions <= 64:
        parser.error("--sessions must be in 1..64")
    if args.livekit_url and not args.livekit_url.startswith(("ws://127.", "ws://localhost")):
        parser.error("--livekit-url must be a loopback ws:// URL")

    from bridge.testing.devserver import LocalLiveKitServer, ensure_server_binary

    server = None
    try:
        if args.livekit_url:
            url = args.livekit_url
        else:
            ensure_server_binary(log=lambda message: print(message, file=sys.stderr))
            server = LocalLiveKitServer()
            server.start()
            url = server.url
        out = Path(args.out) / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
        settings = SoakSettings(
            livekit_url=url,
            log_dir=out,
            seconds=args.seconds,
            sessions=args.sessions,
            sample_every_s=args.sample_every,
            idle_ttl_s=args.idle_ttl,
            warmup_s=args.warmup,
            seed=args.seed,
            kinds=kinds,
            floor=args.floor,
            progress=lambda message: print(message, flush=True),
        )
        result = run_on_asyncio(_run_watched(settings, server))
    except KeyboardInterrupt:
        print("\ninterrupted: every process stopped", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.close()
    print()
    print(format_report(result))
    json_path = out / "soak.json"
    json_path.write_text(json.dumps(result.to_json(), indent=1))
    print(f"JSON: {json_path}")
    if plot(result, out / "soak.png"):
        print(f"plot: {out / 'soak.png'}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
