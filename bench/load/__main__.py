"""Load benchmark: N phones -> bridge -> cloud, beside a bare Python SDK floor and a bare Go receiver.

    python -m bench.load --sweep 1,5,10 --seconds 20 --talkback 0.25 --phones go --out bench/results/

The sweep: for each N, bench.load.driver runs the point, bench.load.report prints its tables; at the
end the tables of the whole sweep, the JSON, the PNG and the logs (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from bench.lib import REPO_ROOT, Children, load_average, pick_cores, pin_all_threads, run_with_local_livekit
from bench.load.driver import check_floor_configuration, run_point
from bench.load.gobuild import ensure_built
from bench.load.report import (
    add_marginal_rss,
    format_rounds,
    format_sweep_slopes,
    format_tables,
    plot,
    point_ratios,
    round_comparisons,
    rounds_summary,
    warnings_for,
)
from bench.native_floor import sink_warning_library
from bridge.testing.devserver import LocalLiveKitServer


async def run(args: argparse.Namespace, lk: LocalLiveKitServer, children: Children) -> int:
    sweep = [int(x) for x in args.sweep.split(",") if x.strip()]
    out = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = out / f"load-{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    cores = pick_cores()
    if cores is None:
        print("WARNING: fewer than 2 usable cores: nothing is pinned, every figure is shared-core noise")
    else:
        # This process is the cloud client: it shares the load core with the phones.
        os.sched_setaffinity(0, cores[1])
        server_place = "unpinned"
        if args.server_core == "load":
            # Unpinned, the server's threads also ran on the measured core: at N=20 it took 35 % of a
            # core there as the last point of a sweep (20 % alone), queueing the side being measured.
            assert lk.process is not None
            pin_all_threads(lk.process.pid, cores[1])
            server_place = f"core {sorted(cores[1])}"
        print(
            f"bridge / Python floor / Go receiver (one after another) pinned to core {sorted(cores[0])}; "
            f"{args.phones} phones + cloud client to core {sorted(cores[1])}; LiveKit server {server_place}"
        )
    if args.cloud_nice:
        # The cloud client timestamps every chunk it receives: the bridge's latency includes its
        # queueing on the load core behind the phones and the server, which the floor (timestamping
        # in its own handler) does not pay. Only this thread: every child is reset to 0 (bench.lib).
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.cloud_nice)
            print(f"cloud client at nice {args.cloud_nice}")
        except PermissionError:
            print(
                f"NOTE: nice {args.cloud_nice} not permitted: the cloud client runs at the default priority"
            )
    print(f"load average before: {load_average()}  (other work on the machine makes every figure noisier)")
    points = []
    assert lk.process is not None
    watchdog = await children.watch(lk.process.pid, str(lk.log_path.parent))
    try:
        for n in sweep:
            point = await run_point(n, args, lk, children, cores, logs)
            point["ratios"] = point_ratios(point)
            point["round_comparisons"] = round_comparisons(point)
            point["rounds_summary"] = rounds_summary(point["round_comparisons"])
            point["warnings"] = warnings_for(point, cores is not None)
            points.append(point)
            print(format_tables(points[-1:]) + format_rounds(points[-1:]), flush=True)
    finally:
        await children.close()
        await children.disarm(watchdog)
    report = {
        "args": vars(args),
        "when": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "pinned": None
            if cores is None
            else {"bridge": sorted(cores[0]), "load": sorted(cores[1]), "livekit_server": args.server_core},
            "load_average_after": load_average(),
            "python": platform.python_version(),
        },
        "points": points,
    }
    add_marginal_rss(points)
    print("\n== summary ==" + format_tables(points) + format_rounds(points) + format_sweep_slopes(points))
    json_path = out / f"load-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=1))
    png_path = out / f"load-{stamp}.png"
    print(f"\nJSON: {json_path}")
    if plot(points, png_path):
        print(f"PNG:  {png_path}")
    print(f"logs: {logs}")
    back_to_idle = (r["bridge"]["tasks_back_to_idle"] for p in points for r in p["rounds"])
    return 0 if all(back_to_idle) else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="1,5,10", help="comma-separated session counts N")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per side and N")
    parser.add_argument("--talkback", type=float, default=0.25, help="share of sessions streaming audio back")
    parser.add_argument(
        "--talkback-mode",
        choices=("continuous", "bursts"),
        default="continuous",
        help="between the once-a-second tone bursts: 100 ms chunks of silence, or nothing",
    )
    parser.add_argument(
        "--joins-at-once",
        type=int,
        default=4,
        help="JoinRoom calls the cloud client has open at once (rooms that connect together may gather "
        "ICE candidates again: more descriptors per session)",
    )
    parser.add_argument(
        "--cloud-nice",
        type=int,
        default=-10,
        help="scheduling priority (nice, -20..19) of the cloud client's thread on the load core, -10 by "
        "default (needs root; without it the client runs at 0 and says so); 0: as before",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="steady traffic before each window")
    parser.add_argument("--settle", type=float, default=2.0, help="idle time before the idle readings")
    parser.add_argument("--drain", type=float, default=1.5, help="wait for late packets after a window")
    parser.add_argument(
        "--phones",
        choices=("go", "python"),
        default="go",
        help="the phone generator: Go (server-sdk-go; phones that listen to talkback stay Python) or Python",
    )
    parser.add_argument(
        "--server-core",
        choices=("load", "any"),
        default="load",
        help="the LiveKit server's threads: on the load core (default), or wherever the kernel puts them",
    )
    parser.add_argument(
        "--sdk-library",
        choices=("shipped", "sink-warning"),
        default="shipped",
        help="the livekit native library of every Python process (bridge, floor, listeners): the wheel's, "
        "or a copy with libwebrtc's log sink at LS_WARNING (the SDK change bench.native_floor measures; "
        "it makes the floor cheap enough for N=40 on one core)",
    )
    parser.add_argument(
        "--cloud-transport",
        choices=("tcp", "unix"),
        default="tcp",
        help="how the cloud client reaches the bridge: loopback TCP (as through a proxy), or a unix "
        "socket (LIVEKIT_GRPC_SOCKET, as a bridge beside its cloud instance)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="bridge and floor windows per N on the same phones (the Go receiver runs in the first only); "
        "the floor goes first in even rounds, and the rounds' medians are printed",
    )
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results"))
    args = parser.parse_args()
    if not 0 <= args.talkback <= 1:
        parser.error("--talkback is a share between 0 and 1")
    if not -20 <= args.cloud_nice <= 19:
        parser.error("--cloud-nice takes -20 to 19")
    if not 1 <= args.joins_at_once <= 200:
        parser.error("--joins-at-once takes 1 to 200")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds takes 1 to 20")
    if args.seconds <= 0 or args.seconds > 3600:
        parser.error("--seconds must be in (0, 3600]")
    sweep = [int(x) for x in args.sweep.split(",") if x.strip()]
    if not sweep or min(sweep) < 1 or max(sweep) > 200:
        parser.error("--sweep takes session counts between 1 and 200")

    if args.sdk_library == "sink-warning":
        library = sink_warning_library()
        if library is None:
            parser.error(
                "--sdk-library sink-warning: the installed livekit library is not the one it patches"
            )
        # The SDK's own override, read when a process first loads the library: every child inherits it.
        os.environ["LIVEKIT_LIB_PATH"] = str(library)
        print(f"every Python process loads {library} (libwebrtc's log sink at LS_WARNING)")
    else:
        # The bridge loads its quiet copy by default (BRIDGE_WEBRTC_LOG_SINK): keep it on the
        # library as shipped, like the floor, so the two are compared on the same native code.
        os.environ["BRIDGE_WEBRTC_LOG_SINK"] = "verbose"
    check_floor_configuration()
    ensure_built()  # the Go receiver (and the Go phones): go build on first use, before any server starts
    # The LiveKit server starts before run() pins this process, which then places the server's threads.
    return run_with_local_livekit(lambda lk, children: run(args, lk, children))


if __name__ == "__main__":
    sys.exit(main())
