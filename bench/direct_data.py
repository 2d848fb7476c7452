"""What the bridge's direct data path saves per packet: the same rooms, the same packets, windows
taken in turn with it on and off.

    python -m bench.direct_data                    # N = 20 rooms, 10 s windows, 4 rounds (~2 min)
    python -m bench.direct_data --n 40 --seconds 15 --rounds 6

``livekit_io/ffi_filter.py`` hands a room's data packet straight to the session when nothing is
queued before it in the room's SDK listener, instead of through the listener task. Paired windows in one
process take the rest of the machine's noise out of the comparison: the receiver is the bridge's
own ``RoomLink`` on the bridge's loop (Trio, trio-asyncio, ``aio_batching``), connected to N rooms
of one LiveKit server on loopback; the phones are ``bench.native_floor``'s (one packet every 100 ms
per room, 3.2 KB, spread over the period) on the other core. Each round measures one window with
the direct path on and one with it off (``ffi_filter.DIRECT_DATA``), alternating which goes first,
and prints CPU per received packet by thread group (µs), then the medians and their difference.

The receiver's role (JSON lines on stdin, ``@@`` answers, as ``bench.load.workers``):

    python -m bench.direct_data receiver
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.load.threads import GROUPS, cpu_by_group
from bench.load.traffic import HEADER

MODULE = "bench.direct_data"


# --------------------------------------------------------------------------------------------
# the receiver: the bridge's RoomLink on the bridge's loop
# --------------------------------------------------------------------------------------------


def _receiver_main() -> None:
    import trio
    import trio_asyncio
    from trio_asyncio import aio_as_trio

    from bench.load.workers import _serve_commands
    from bridge import aio_batching
    from bridge.livekit_io import ffi_filter
    from bridge.livekit_io.room import RoomLink, open_event_channel

    async def main() -> None:
        aio_batching.install()
        events_send, events_receive = open_event_channel()
        links: list[RoomLink] = []
        totals = {"packets": 0}

        def on_data(payload: bytes, _identity: str) -> None:
            HEADER.unpack_from(payload, 1)  # the floor's whole per-packet work: read the send time
            totals["packets"] += 1

        async def connect(command: dict[str, Any]) -> dict[str, Any]:
            started = time.monotonic()
            for token in command["tokens"]:  # one at a time, as the bridge connects rooms
                link = RoomLink(on_data=on_data, events=events_send)
                await link.connect(command["url"], token, timeout_s=30)
                links.append(link)
            return {
                "connected": len(links),
                "narrowed": sum(link.events_filtered for link in links),
                "connect_s": time.monotonic() - started,
            }

        async def mode(command: dict[str, Any]) -> dict[str, Any]:
            ffi_filter.DIRECT_DATA = bool(command["direct"])
            return {"direct": ffi_filter.DIRECT_DATA}

        async def count(_command: dict[str, Any]) -> dict[str, Any]:
            return {"packets": totals["packets"], "direct": sum(link.direct_data_packets for link in links)}

        async def quit_(_command: dict[str, Any]) -> dict[str, Any]:
            for link in links:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(link.aclose(), 10)
            return {"ok": True}

        async def drain_events() -> None:
            async for _event in events_receive:
                pass  # state events (participants, reconnects): the benchmark only needs them gone

        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            nursery.start_soon(drain_events)
            handlers = {"connect": connect, "mode": mode, "count": count, "quit": quit_}
            await aio_as_trio(_serve_commands)(handlers)
            nursery.cancel_scope.cancel()

    trio.run(main)


# --------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------


async def _window(receiver: Any, pid: int, seconds: float) -> tuple[dict[str, float], dict[str, int]]:
    """CPU seconds by thread group and the receiver's counters' growth over ``seconds``."""
    g0, c0 = cpu_by_group(pid), await receiver.call({"cmd": "count"}, 10)
    await asyncio.sleep(seconds)
    g1, c1 = cpu_by_group(pid), await receiver.call({"cmd": "count"}, 10)
    return {g: g1[g] - g0[g] for g in GROUPS}, {k: c1[k] - c0[k] for k in c0}


def _us_per_packet(cpu: dict[str, float], packets: int) -> dict[str, float]:
    per = {g: cpu[g] / max(1, packets) * 1e6 for g in GROUPS}
    per["total"] = sum(per[g] for g in GROUPS)
    return per


COLUMNS = ("main", "tokio-rt-worker", "network_thread", "other", "total")


def _row(label: str, per: dict[str, float], counts: dict[str, int]) -> str:
    cells = " ".join(f"{per[c]:>9.1f}" for c in COLUMNS)
    return f"{label:<16} {cells} {counts['packets']:>8} {counts['direct']:>7}"


async def run(args: argparse.Namespace, lk: Any, children: Any) -> int:
    from bench.lib import load_average, module_argv, place_on_load_core
    from bench.load.driver import Worker

    out = Path(args.out) / f"direct-data-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    cores = place_on_load_core(lk, "receiver (phones: the load core)")
    print(f"load average at start: {load_average()}", flush=True)
    run_id = uuid.uuid4().hex[:6]
    rooms = [f"direct-{run_id}-{i}" for i in range(args.n)]
    try:
        phones_proc = await children.spawn(
            module_argv("bench.native_floor", "phones"),
            cores=cores[1] if cores else None,
            log_path=out / "phones.log",
            pipes=True,
        )
        phones = Worker("phones", phones_proc, out / "phones.log")
        receiver_proc = await children.spawn(
            module_argv(MODULE, "receiver"),
            cores=cores[0] if cores else None,
            log_path=out / "receiver.log",
            pipes=True,
        )
        receiver = Worker("receiver", receiver_proc, out / "receiver.log")
        tokens = [lk.token(f"floor-{i}", room) for i, room in enumerate(rooms)]
        connected = await receiver.call({"cmd": "connect", "url": lk.url, "tokens": tokens}, 30 + 5 * args.n)
        if connected["narrowed"] != args.n:
            raise RuntimeError(
                f"the per-room event filter applied to {connected['narrowed']} of {args.n} rooms"
            )
        specs = [{"token": lk.token(f"phone-{i}", room), "to": f"floor-{i}"} for i, room in enumerate(rooms)]
        await phones.call({"cmd": "connect", "url": lk.url, "phones": specs}, 30 + 5 * args.n)
        await phones.call({"cmd": "mode", "on": True}, 10)
        await asyncio.sleep(args.warmup)
        print(f"{args.n} rooms, a 3.2 KB packet every 100 ms each; µs of CPU per received packet")
        head = " ".join(f"{c:>9}" for c in ("main", "tokio", "network", "other", "total"))
        print(f"{'round / path':<16} {head} {'packets':>8} {'direct':>7}", flush=True)
        results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for round_ in range(args.rounds):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            for direct in order:
                await receiver.call({"cmd": "mode", "direct": direct}, 10)
                await asyncio.sleep(1.0)  # packets queued under the other path are through
                cpu, counts = await _window(receiver, receiver_proc.pid, args.seconds)
                per = _us_per_packet(cpu, counts["packets"])
                results[direct].append(per)
                label = f"{round_ + 1} {'direct' if direct else 'through SDK'}"
                print(_row(label, per, counts), flush=True)
        median = {d: {c: statistics.median(r[c] for r in results[d]) for c in COLUMNS} for d in (True, False)}
        print(f"\nmedians of {args.rounds} rounds (µs per packet)")
        for direct in (True, False):
            cells = " ".join(f"{median[direct][c]:>9.1f}" for c in COLUMNS)
            print(f"{'direct' if direct else 'through SDK':<16} {cells}")
        saved = {c: median[False][c] - median[True][c] for c in COLUMNS}
        print(f"{'saved':<16} " + " ".join(f"{saved[c]:>9.1f}" for c in COLUMNS))
        pairs = [off["main"] - on["main"] for on, off in zip(results[True], results[False], strict=True)]
        print(f"main thread saved per round: {', '.join(f'{p:.1f}' for p in pairs)} µs per packet")
        print(
            f"at one packet per 100 ms per session: {saved['total'] * 10 / 1e4:.3f} % of a core per session "
            f"(main thread {saved['main'] * 10 / 1e4:.3f} %)"
        )
        with contextlib.suppress(Exception):
            await phones.call({"cmd": "quit"}, 20)
            await receiver.call({"cmd": "quit"}, 20)
    finally:
        await children.close()
    print(f"load average at end: {load_average()}")
    return 0


def main() -> int:
    if len(sys.argv) == 2 and sys.argv[1] == "receiver":
        _receiver_main()
        return 0
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="rooms (and phones)")
    parser.add_argument("--seconds", type=float, default=10.0, help="window per path and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=3.0, help="traffic before the first window")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    if not 1 <= args.n <= 60 or not 1 <= args.seconds <= 120 or not 1 <= args.rounds <= 10:
        parser.error("--n 1..60, --seconds 1..120, --rounds 1..10")
    from bench.lib import run_with_local_livekit

    return run_with_local_livekit(lambda lk, children: run(args, lk, children))


if __name__ == "__main__":
    sys.exit(main())
