"""python -m bench.handover [--users 30] [--bridges 3] [--settle 5] [--json PATH]

Prints, per scenario, the mic gap per affected user (the longest run of consecutive 100 ms packets
that never reached the cloud) as p50 / p99 / max, the packets lost in all, and what the users not
affected lost. Needs haproxy, node, and the TypeScript client built (cd clients/typescript && npm ci
&& npm run build). Bounded: about a minute with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from bridge.testing.pool import Gap, Pool

from ..lib import load_average, percentiles


def _row(name: str, gaps: dict[str, Gap], affected: list[str], others: list[str]) -> dict[str, object]:
    longest = [gaps[u].longest_ms for u in affected]
    stats = percentiles(longest)
    return {
        "scenario": name,
        "affected": len(affected),
        "gap_ms": stats,
        "missing_packets": sum(gaps[u].missing for u in affected),
        "duplicates": sum(gaps[u].duplicates for u in affected),
        "others": len(others),
        "others_missing_packets": sum(gaps[u].missing for u in others),
    }


def _print(row: dict[str, object]) -> None:
    gap = row["gap_ms"]
    assert isinstance(gap, dict)

    def ms(key: str) -> str:
        value = gap[key]
        return "-" if value is None else f"{value:.0f}"

    print(
        f"{row['scenario']:<10} {row['affected']:>8} {ms('p50'):>8} {ms('p99'):>8} {ms('max'):>8} "
        f"{row['missing_packets']:>8} {row['duplicates']:>6} {row['others_missing_packets']:>13}"
    )


def _measure(pool: Pool, settle_s: float, act: Callable[[], None]) -> dict[str, Gap]:
    started = time.time()
    act()
    time.sleep(settle_s)
    return pool.gaps((started - 1.0, time.time() - 1.5))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--bridges", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after each event before measuring")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    print(f"load average at start: {load_average()} ({os.cpu_count()} cores)")
    rows = []
    with Pool(bridges_n=args.bridges, users_n=args.users, spare_n=1) as pool:
        joined = pool.connect()
        if joined["failed"]:
            raise SystemExit(f"joins failed: {joined['failed']}")
        print(f"{args.users} users on {args.bridges} bridges: {pool.sessions()}")
        time.sleep(2)
        names = [b.name for b in pool.bridges[: args.bridges]]

        def on(bridge: str) -> list[str]:
            return sorted(u for u, h in pool.holders().items() if h == [bridge])

        # kill: SIGKILL one bridge; its users' streams break, they re-join where the proxy sends them.
        victim = pool.bridges[0]
        affected = on(victim.name)
        gaps = _measure(pool, args.settle, victim.kill)
        rows.append(_row("kill", gaps, affected, [u for u in pool.users if u not in affected]))
        victim.start()
        pool.proxy.wait_servers(pool.running())

        # drain: SIGTERM one bridge; each session is handed over (queued audio flushed, the stream
        # ends UNAVAILABLE "draining"), the client re-joins on a ready bridge.
        drained = pool.bridges[1]
        affected = on(drained.name)
        gaps = _measure(pool, args.settle, lambda: drained.terminate())
        rows.append(_row("drain", gaps, affected, [u for u in pool.users if u not in affected]))
        drained.start()
        pool.proxy.wait_servers(pool.running())

        # scale-up: a new bridge joins the ring. With the stick table nobody moves (measured first);
        # then the table is cleared (a proxy restarted, or a replica without `peers`), and every
        # user's next call goes by the hash: those now hashed to the new bridge get NOT_FOUND and
        # re-join there, make-before-break.
        spare = pool.bridges[args.bridges]
        before = pool.holders()
        gaps = _measure(pool, 2.0, lambda: (spare.start(), pool.proxy.wait_servers(pool.running())))
        moved = sorted(u for u, h in pool.holders().items() if h != before[u])
        rows.append(_row("scale-up", gaps, moved, [u for u in pool.users if u not in moved]))

        def lose_table_and_call() -> None:
            pool.proxy.command("clear table bridges")
            pool.cloud.request("status")

        before = pool.holders()
        gaps = _measure(pool, args.settle, lose_table_and_call)
        moved = sorted(u for u, h in pool.holders().items() if h != before[u])
        rows.append(_row("ring-move", gaps, moved, [u for u in pool.users if u not in moved]))
        print(f"after: {pool.sessions()} (bridges {names} + {spare.name})")

    print()
    print("mic audio missing per affected user (ms of 100 ms packets never delivered), during each event:")
    print(
        f"{'scenario':<10} {'affected':>8} {'p50':>8} {'p99':>8} {'max':>8} "
        f"{'packets':>8} {'dups':>6} {'others lost':>13}"
    )
    for row in rows:
        _print(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
