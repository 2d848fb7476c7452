"""What bench.load prints and writes: the bridge's ratios to both references (the Python floor and the
Go receiver), saturation warnings, the tables per point and for the sweep, and the PNG.
bench/README.md says what each column means."""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.lib import least_squares_slope
from bench.load.threads import GROUPS

SATURATED_PCT = 85.0
"""A process at more than this % of its (single) core is treated as saturated."""
OVERSUBSCRIBED_WAITED_PCT = 100.0
"""A measured process whose threads waited for a CPU this much of the window (summed over threads: on
average one of them always runnable and not running) had less core than it needed, whatever its CPU%."""
SIDES = ("bridge", "floor", "go")
"""The measured sides of a point, in the order they run: the bridge, the Python floor, the Go receiver."""
REFERENCES = ("floor", "go")
"""What the bridge is compared with: every ratio is bridge ÷ one of these."""
SIDE_NAMES = {"bridge": "the bridge", "floor": "the Python floor", "go": "the Go receiver"}
CPU_RATIO_TARGET = 1.15
P99_ADDED_TARGET_MS = 3.0
"""#15 item 3: the bridge's CPU per session within this ratio of the floor's, its p99 within this many
ms above the floor's."""


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def ratios(bridge: dict[str, Any], reference: dict[str, Any]) -> dict[str, float | None]:
    """Bridge ÷ reference per session (CPU, RSS, descriptors) and per percentile (latency, onset)."""
    return {
        "cpu": ratio(bridge["cpu_pct_per_session"], reference["cpu_pct_per_session"]),
        "rss": ratio(bridge["rss_per_session_mib"], reference["rss_per_session_mib"]),
        "fds": ratio(bridge["fds_per_session"], reference["fds_per_session"]),
        **{
            f"latency_{q}": ratio(bridge["latency_ms"][q], reference["latency_ms"][q])
            for q in ("p50", "p95", "p99", "max")
        },
        **{
            f"onset_{q}": ratio(bridge["onset_ms"][q], reference["onset_ms"][q])
            for q in ("p50", "p95", "p99", "max")
        },
    }


def point_ratios(point: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """``{"floor": bridge ÷ Python floor, "go": bridge ÷ Go receiver}`` for one point."""
    return {ref: ratios(point["bridge"], point[ref]) for ref in REFERENCES}


def round_comparisons(point: dict[str, Any]) -> list[dict[str, Any]]:
    """Bridge against floor in each paired round of a point (``--rounds``): CPU ratio, p99 added."""
    compared = []
    for number, round_ in enumerate(point["rounds"], start=1):
        b, f = round_["bridge"], round_["floor"]
        b99, f99 = b["latency_ms"]["p99"], f["latency_ms"]["p99"]
        compared.append(
            {
                "round": number,
                "order": round_["order"],
                "cpu_pct_per_session": {
                    "bridge": b["cpu_pct_per_session"],
                    "floor": f["cpu_pct_per_session"],
                },
                "cpu_ratio": ratio(b["cpu_pct_per_session"], f["cpu_pct_per_session"]),
                "p99_ms": {"bridge": b99, "floor": f99},
                "p99_added_ms": None if b99 is None or f99 is None else b99 - f99,
                "bridge_p99_split_ms": {
                    "to_handler": b["latency_to_handler_ms"]["p99"],
                    "handler_to_cloud": b["latency_handler_to_cloud_ms"]["p99"],
                },
                "main_thread_pct_per_session": {
                    "bridge": b["thread_cpu_pct_per_session"]["main"],
                    "floor": f["thread_cpu_pct_per_session"]["main"],
                },
                "waited_pct": {"bridge": b["cpu_waited_pct"], "floor": f["cpu_waited_pct"]},
            }
        )
    return compared


def rounds_summary(compared: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds, and how many rounds met each of #15 item 3's two bounds."""
    cpu = [c["cpu_ratio"] for c in compared if c["cpu_ratio"] is not None]
    added = [c["p99_added_ms"] for c in compared if c["p99_added_ms"] is not None]
    return {
        "rounds": len(compared),
        "cpu_ratio_median": statistics.median(cpu) if cpu else None,
        "p99_added_ms_median": statistics.median(added) if added else None,
        "cpu_within": sum(r <= CPU_RATIO_TARGET for r in cpu),
        "p99_within": sum(a <= P99_ADDED_TARGET_MS for a in added),
    }


def format_rounds(points: list[dict[str, Any]]) -> str:
    """The paired rounds of each point (empty when every point ran one round)."""
    if all(len(p["rounds"]) < 2 for p in points):
        return ""
    lines = [
        "\npaired rounds, bridge against the Python floor (the floor first in even rounds); #15 item 3:"
        f" CPU <= {CPU_RATIO_TARGET:.2f}x, p99 <= floor + {P99_ADDED_TARGET_MS:.0f} ms",
        "    N | round first  | CPU%/s bridge  floor  br/fl | main thread br/fl |"
        " p99 ms bridge  floor  added | bridge p99 to handler, on to cloud | waited% br/fl",
    ]
    for p in points:
        for c in p["round_comparisons"]:
            cpu, p99, waited = c["cpu_pct_per_session"], c["p99_ms"], c["waited_pct"]
            main, split = c["main_thread_pct_per_session"], c["bridge_p99_split_ms"]
            lines.append(
                f"{p['n']:5d} | {c['round']:5d} {c['order'][0]:<6} | {_f(cpu['bridge'], 13, 2)}"
                f"{_f(cpu['floor'], 7, 2)} {_x(c['cpu_ratio'])} |"
                f" {main['bridge']:9.2f} / {main['floor']:4.2f} |"
                f" {_f(p99['bridge'], 13)}{_f(p99['floor'], 7)}{_f(c['p99_added_ms'], 7)} |"
                f" {_f(split['to_handler'], 24)}{_f(split['handler_to_cloud'], 10)} |"
                f" {waited['bridge']:.0f}/{waited['floor']:.0f}"
            )
        summary = p["rounds_summary"]
        lines.append(
            f"{p['n']:5d} | median of {summary['rounds']}: CPU {_x(summary['cpu_ratio_median']).strip()}"
            f" (within {CPU_RATIO_TARGET:.2f}x in {summary['cpu_within']}/{summary['rounds']}),"
            f" p99 added {_f(summary['p99_added_ms_median'], 1).strip()} ms"
            f" (within +{P99_ADDED_TARGET_MS:.0f} ms in {summary['p99_within']}/{summary['rounds']})"
        )
    return "\n" + "\n".join(lines)


def warnings_for(point: dict[str, Any], pinned: bool) -> list[str]:
    found = []
    for side in SIDES:
        load = point[side]["load"]
        phones, cloud = load["phones_cpu_pct"], load["cloud_cpu_pct"]
        lag = load["send_lag_ms"]["p99"] or 0.0
        if phones > SATURATED_PCT:
            found.append(
                f"{side} run: the phones used {phones:.0f} % of their core: GENERATOR-BOUND, these figures "
                "are not a bridge limit (use fewer phones or a cheaper generator)"
            )
        elif pinned and phones + (cloud if side == "bridge" else 0) > SATURATED_PCT:
            found.append(
                f"{side} run: the load core was {phones + cloud:.0f} % busy (phones {phones:.0f} % + cloud "
                f"client {cloud:.0f} %): load-bound, not a bridge limit"
            )
        if lag > 20:
            found.append(f"{side} run: phones sent late (p99 {lag:.0f} ms behind schedule): generator-bound")
        if point[side]["cpu_pct"] > SATURATED_PCT:
            what = (
                "the BRIDGE's core is saturated: a bridge limit"
                if side == "bridge"
                else f"{SIDE_NAMES[side]} saturated its core"
            )
            found.append(f"{side} run: {point[side]['cpu_pct']:.0f} % of one core: {what}")
        elif point[side]["cpu_waited_pct"] > OVERSUBSCRIBED_WAITED_PCT:
            found.append(
                f"{side} run: {SIDE_NAMES[side]} got {point[side]['cpu_pct']:.0f} % of its core and its"
                f" threads waited {point[side]['cpu_waited_pct']:.0f} % of the window for it (its own threads"
                " and other processes on that core, e.g. the unpinned LiveKit server): its core was"
                " oversubscribed, latencies are queueing"
            )
    for number, round_ in enumerate(point["rounds"], start=1):
        bridge = round_["bridge"]
        if not bridge["tasks_back_to_idle"]:
            found.append(
                f"round {number}: bridge tasks did not return to idle after every session left: "
                f"idle {bridge['tasks_idle']}, after {bridge['tasks_after_leave']}"
            )
    return found


def add_marginal_rss(points: list[dict[str, Any]]) -> None:
    """RSS and descriptors per added session between consecutive sweep points: (value at N2 - value
    at N1) / (N2 - N1), per side, and the bridge's ratios of them to each reference.

    Unlike the per-session figures they leave out what the first room costs once (the SDK's native
    runtime), so they are what one more session costs at that size.
    """
    for previous, point in itertools.pairwise(points):
        step = point["n"] - previous["n"]
        if step <= 0:
            continue
        for side in SIDES:
            point[side]["rss_marginal_mib_per_session"] = (
                point[side]["rss_mib"] - previous[side]["rss_mib"]
            ) / step
            point[side]["fds_marginal_per_session"] = (point[side]["fds"] - previous[side]["fds"]) / step
        for ref in REFERENCES:
            for key, figure in (
                ("rss_marginal", "rss_marginal_mib_per_session"),
                ("fds_marginal", "fds_marginal_per_session"),
            ):
                point["ratios"][ref][key] = ratio(point["bridge"][figure], point[ref][figure])


def format_sweep_slopes(points: list[dict[str, Any]]) -> str:
    """Per-session cost as the least-squares slope over the whole sweep (CPU %, RSS MiB and
    descriptors against N), per side: the form of #15's table. Empty with fewer than two points."""
    if len({p["n"] for p in points}) < 2:
        return ""
    ns = [p["n"] for p in points]
    lines = [
        f"\nper session over the sweep N = {','.join(map(str, ns))}: least-squares slope against N;"
        " ratios bridge/floor and bridge/go",
        "                        |  bridge   floor      go | br/fl  br/go",
    ]
    for label, key in (
        ("CPU, % of one core", "cpu_pct"),
        ("RSS, MiB", "rss_mib"),
        ("file descriptors", "fds"),
    ):
        slopes = {side: least_squares_slope(ns, [p[side][key] for p in points]) for side in SIDES}
        figures = " ".join(_f(slopes[side], 7, 2) for side in SIDES)
        ratios_ = " ".join(_x(ratio(slopes["bridge"], slopes[ref])) for ref in REFERENCES)
        lines.append(f"  {label:<21} | {figures} | {ratios_}")
    return "\n".join(lines)


def _f(value: float | None, width: int = 6, digits: int = 1) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def _x(value: float | None) -> str:
    return f"{'-':>6}" if value is None else f"{value:5.2f}x"


def _slashed(p: dict[str, Any], key: str, digits: int = 1) -> str:
    """One figure of bridge, floor and go as ``b / f / g``."""
    return " / ".join(f"{p[side][key]:.{digits}f}" for side in SIDES)


def _both(p: dict[str, Any], key: str) -> str:
    """The bridge's ratio to the floor and to the Go receiver for ``key``."""
    return " ".join(_x(p["ratios"][ref].get(key)) for ref in REFERENCES)


def format_tables(points: list[dict[str, Any]]) -> str:
    lines = []
    lines.append(
        "\nroom -> receiver latency, ms (bridge: phone send -> cloud receive; floor, go: phone send ->"
        " data handler); ratios bridge/floor and bridge/go"
    )
    lines.append(
        "    N |  bridge p50   p95   p99   max |   floor p50   p95   p99   max |"
        "      go p50   p95   p99   max | added p50 fl   go | br/fl p50    p99 | br/go p50    p99"
    )
    for p in points:
        b, f, g = (p[side]["latency_ms"] for side in SIDES)
        added = [None if b["p50"] is None or ref["p50"] is None else b["p50"] - ref["p50"] for ref in (f, g)]
        lines.append(
            f"{p['n']:5d} | {_f(b['p50'], 10)}{_f(b['p95'])}{_f(b['p99'])}{_f(b['max'])} |"
            f" {_f(f['p50'], 9)}{_f(f['p95'])}{_f(f['p99'])}{_f(f['max'])} |"
            f" {_f(g['p50'], 9)}{_f(g['p95'])}{_f(g['p99'])}{_f(g['max'])} |"
            f" {_f(added[0], 12)}{_f(added[1], 5)} |"
            f" {_x(p['ratios']['floor']['latency_p50']):>9} {_x(p['ratios']['floor']['latency_p99'])} |"
            f" {_x(p['ratios']['go']['latency_p50']):>9} {_x(p['ratios']['go']['latency_p99'])}"
        )
    lines.append(
        "\ncloud -> room tone onset, ms (send of a burst -> first loud frame at the listening phone;"
        " the Go receiver publishes no talkback)"
    )
    lines.append(
        "    N | talk |  bridge p50   p95   p99   max miss |   floor p50   p95   p99   max miss |"
        " added p50  br/fl p50"
    )
    for p in points:
        b, f = p["bridge"], p["floor"]
        bo, fo = b["onset_ms"], f["onset_ms"]
        onset_added = None if bo["p50"] is None or fo["p50"] is None else bo["p50"] - fo["p50"]
        lines.append(
            f"{p['n']:5d} | {p['talkback_sessions']:4d} | {_f(bo['p50'], 10)}{_f(bo['p95'])}{_f(bo['p99'])}"
            f"{_f(bo['max'])} {b['tones_missed']:3d}/{b['tones_sent']:<3d}|"
            f" {_f(fo['p50'], 9)}{_f(fo['p95'])}{_f(fo['p99'])}{_f(fo['max'])}"
            f" {f['tones_missed']:3d}/{f['tones_sent']:<3d}|"
            f" {_f(onset_added, 9)} {_x(p['ratios']['floor']['onset_p50']):>10}"
        )
    lines.append(
        "\nCPU per session, % of one core (measured process, window ÷ N); whole process, % of its core;"
        " waited = runnable but off-CPU, % of the window"
    )
    lines.append(
        "    N | CPU%/s bridge  floor     go | br/fl  br/go | CPU% bridge  floor     go | idle CPU% br/fl/go"
        " | waited% br/fl/go"
    )
    for p in points:
        lines.append(
            f"{p['n']:5d} | {_f(p['bridge']['cpu_pct_per_session'], 13, 2)}"
            f"{_f(p['floor']['cpu_pct_per_session'], 7, 2)}{_f(p['go']['cpu_pct_per_session'], 7, 2)} |"
            f" {_both(p, 'cpu')} | {_f(p['bridge']['cpu_pct'], 11, 1)}{_f(p['floor']['cpu_pct'], 7, 1)}"
            f"{_f(p['go']['cpu_pct'], 7, 1)} | {_slashed(p, 'idle_cpu_pct'):>18} |"
            f" {_slashed(p, 'cpu_waited_pct')}"
        )
    lines.append(
        "\nRSS per session, MiB above the idle process (marginal = between sweep points, summary only)"
    )
    lines.append(
        "    N | MiB/s bridge  floor     go | br/fl  br/go | marginal bridge floor    go | br/fl  br/go |"
        " idle RSS MiB br/fl/go"
    )
    for p in points:
        lines.append(
            f"{p['n']:5d} | {_f(p['bridge']['rss_per_session_mib'], 12, 2)}"
            f"{_f(p['floor']['rss_per_session_mib'], 7, 2)}{_f(p['go']['rss_per_session_mib'], 7, 2)} |"
            f" {_both(p, 'rss')} |"
            f" {_f(p['bridge'].get('rss_marginal_mib_per_session'), 15, 2)}"
            f"{_f(p['floor'].get('rss_marginal_mib_per_session'), 6, 2)}"
            f"{_f(p['go'].get('rss_marginal_mib_per_session'), 6, 2)} |"
            f" {_both(p, 'rss_marginal')} |"
            f" {_slashed(p, 'rss_idle_mib')}"
        )
    lines.append(
        "\nfile descriptors of the measured process (/proc/<pid>/fd; per session = (at N - idle) / N, the"
        " first room's one-time cost included; marginal = between sweep points, summary only)"
    )
    lines.append(
        "    N | idle br/fl/go  | at N br/fl/go    | fds/s bridge  floor     go | br/fl  br/go |"
        " marginal bridge floor    go | br/fl  br/go"
    )
    for p in points:
        idle = "/".join(f"{p[side]['fds_idle']}" for side in SIDES)
        at_n = "/".join(f"{p[side]['fds']}" for side in SIDES)
        lines.append(
            f"{p['n']:5d} | {idle:>14} | {at_n:>16} |"
            f" {_f(p['bridge']['fds_per_session'], 12, 1)}{_f(p['floor']['fds_per_session'], 7, 1)}"
            f"{_f(p['go']['fds_per_session'], 7, 1)} | {_both(p, 'fds')} |"
            f" {_f(p['bridge'].get('fds_marginal_per_session'), 15, 1)}"
            f"{_f(p['floor'].get('fds_marginal_per_session'), 6, 1)}"
            f"{_f(p['go'].get('fds_marginal_per_session'), 6, 1)} | {_both(p, 'fds_marginal')}"
        )
    lines.append(
        "\ntasks per session (bridge: HealthCheck trio/asyncio; floor: asyncio; go: goroutines); threads at N"
    )
    lines.append("    N | bridge trio  aio | floor aio | go goroutines | threads br/fl/go")
    for p in points:
        bt = p["bridge"]["tasks_per_session"]
        lines.append(
            f"{p['n']:5d} | {_f(bt['trio'], 11, 1)}{_f(bt['asyncio'], 5, 1)} |"
            f" {_f(p['floor']['tasks_per_session']['asyncio'], 9, 1)} |"
            f" {_f(p['go']['tasks_per_session']['goroutines'], 13, 1)} |"
            f" {' / '.join(str(p[side]['threads']) for side in SIDES)}"
        )
    lines.append(
        "\nCPU % of one core per session by thread group (bridge / floor; Go schedules goroutines on"
        " any thread: its total only)"
    )
    lines.append("    N | " + " | ".join(f"{g:>15s} br/fl" for g in GROUPS) + " | go total")
    for p in points:
        bt, ft = p["bridge"]["thread_cpu_pct_per_session"], p["floor"]["thread_cpu_pct_per_session"]
        lines.append(
            f"{p['n']:5d} | "
            + " | ".join(f"{bt[g]:11.2f} / {ft[g]:5.2f}" for g in GROUPS)
            + f" | {p['go']['cpu_pct_per_session']:8.2f}"
        )
    lines.append("\ndrops and load (window of steady traffic)")
    lines.append(
        "    N | q_dropped pkts_lost | missing br/fl/go of sent  | gen CPU% br/fl/go  | cloud CPU% |"
        " server CPU% br/fl/go | send lag p99 ms | tasks back | load-core waited% br/fl/go"
    )
    for p in points:
        b = p["bridge"]
        lag = max(p[side]["load"]["send_lag_ms"]["p99"] or 0 for side in SIDES)
        missing = "/".join(str(p[side]["packets_missing"]) for side in SIDES)
        gen = "/".join(f"{p[side]['load']['phones_cpu_pct']:.1f}" for side in SIDES)
        server = "/".join(_f(p[side]["load"]["server_cpu_pct"], 1).strip() for side in SIDES)
        waited = "/".join(
            f"{p[side]['load']['phones_waited_pct'] + p[side]['load']['cloud_waited_pct']:.0f}"
            for side in SIDES
        )
        lines.append(
            f"{p['n']:5d} | {b['queue_dropped_chunks']:9d} {b['packets_lost']:9d} |"
            f" {missing:>14} of {b['packets_sent']:<6d} | {gen:>18} | {b['load']['cloud_cpu_pct']:10.1f} |"
            f" {server:>20} | {lag:15.1f} | {'yes' if b['tasks_back_to_idle'] else 'NO':>10} | {waited}"
        )
    for p in points:
        for warning in p["warnings"]:
            lines.append(f"WARNING N={p['n']}: {warning}")
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return False
    ns = [p["n"] for p in points]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))

    def series(ax: Any, title: str, ylabel: str, getters: list[tuple[str, Any, str]]) -> None:
        for label, get, style in getters:
            ys = [get(p) for p in points]
            color = {"bridge": "tab:blue", "go": "tab:green"}.get(label.split()[0], "tab:orange")
            ax.plot(ns, [float("nan") if y is None else y for y in ys], style, color=color, label=label)
        ax.set_title(title)
        ax.set_xticks(ns)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("sessions (N)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)

    series(
        axes[0][0],
        "CPU per session",
        "% of one core",
        [
            ("bridge", lambda p: p["bridge"]["cpu_pct_per_session"], "o-"),
            ("floor (plain rtc.Room)", lambda p: p["floor"]["cpu_pct_per_session"], "s--"),
            ("go (server-sdk-go receiver)", lambda p: p["go"]["cpu_pct_per_session"], "^-."),
        ],
    )
    series(
        axes[0][1],
        "RSS per session (above idle)",
        "MiB",
        [
            ("bridge", lambda p: p["bridge"]["rss_per_session_mib"], "o-"),
            ("floor", lambda p: p["floor"]["rss_per_session_mib"], "s--"),
            ("go", lambda p: p["go"]["rss_per_session_mib"], "^-."),
        ],
    )
    series(
        axes[1][0],
        "room -> receiver latency",
        "ms",
        [
            ("bridge p50", lambda p: p["bridge"]["latency_ms"]["p50"], "o-"),
            ("bridge p99", lambda p: p["bridge"]["latency_ms"]["p99"], "o:"),
            ("floor p50", lambda p: p["floor"]["latency_ms"]["p50"], "s--"),
            ("floor p99", lambda p: p["floor"]["latency_ms"]["p99"], "s:"),
            ("go p50", lambda p: p["go"]["latency_ms"]["p50"], "^-."),
            ("go p99", lambda p: p["go"]["latency_ms"]["p99"], "^:"),
        ],
    )
    series(
        axes[1][1],
        "cloud -> room tone onset",
        "ms",
        [
            ("bridge p50", lambda p: p["bridge"]["onset_ms"]["p50"], "o-"),
            ("bridge p99", lambda p: p["bridge"]["onset_ms"]["p99"], "o:"),
            ("floor p50", lambda p: p["floor"]["onset_ms"]["p50"], "s--"),
            ("floor p99", lambda p: p["floor"]["onset_ms"]["p99"], "s:"),
        ],
    )
    fig.suptitle("livekit-bridge vs the Python SDK floor and a Go receiver (same phones, same rooms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
