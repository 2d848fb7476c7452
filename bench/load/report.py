"""What bench.load prints and writes: bridge/floor ratios, saturation warnings, the four tables per
point and for the sweep, and the PNG. bench/README.md says what each column means."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from bench.load.threads import GROUPS

SATURATED_PCT = 85.0
"""A process at more than this % of its (single) core is treated as saturated."""


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def ratios(bridge: dict[str, Any], floor: dict[str, Any]) -> dict[str, float | None]:
    """Bridge ÷ floor per session (CPU, RSS) and per percentile (latency, onset)."""
    return {
        "cpu": ratio(bridge["cpu_pct_per_session"], floor["cpu_pct_per_session"]),
        "rss": ratio(bridge["rss_per_session_mib"], floor["rss_per_session_mib"]),
        **{
            f"latency_{q}": ratio(bridge["latency_ms"][q], floor["latency_ms"][q])
            for q in ("p50", "p95", "p99", "max")
        },
        **{
            f"onset_{q}": ratio(bridge["onset_ms"][q], floor["onset_ms"][q])
            for q in ("p50", "p95", "p99", "max")
        },
    }


def warnings_for(point: dict[str, Any], pinned: bool) -> list[str]:
    found = []
    for side in ("bridge", "floor"):
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
                else "the floor saturated"
            )
            found.append(f"{side} run: {point[side]['cpu_pct']:.0f} % of one core: {what}")
    if not point["bridge"]["tasks_back_to_idle"]:
        found.append(
            "bridge tasks did not return to idle after every session left: "
            f"idle {point['bridge']['tasks_idle']}, after {point['bridge']['tasks_after_leave']}"
        )
    return found


def add_marginal_rss(points: list[dict[str, Any]]) -> None:
    """RSS and descriptors per added session between consecutive sweep points: (value at N2 - value
    at N1) / (N2 - N1).

    Unlike the per-session figures they leave out what the first room costs once (the SDK's native
    runtime), so they are what one more session costs at that size.
    """
    for previous, point in itertools.pairwise(points):
        step = point["n"] - previous["n"]
        if step <= 0:
            continue
        for side in ("bridge", "floor"):
            point[side]["rss_marginal_mib_per_session"] = (
                point[side]["rss_mib"] - previous[side]["rss_mib"]
            ) / step
            point[side]["fds_marginal_per_session"] = (point[side]["fds"] - previous[side]["fds"]) / step


def _f(value: float | None, width: int = 6, digits: int = 1) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def _x(value: float | None) -> str:
    return f"{'-':>6}" if value is None else f"{value:5.2f}x"


def format_tables(points: list[dict[str, Any]]) -> str:
    lines = []
    lines.append(
        "\nroom -> cloud latency, ms (bridge: phone send -> cloud receive; floor: phone send -> handler)"
    )
    lines.append(
        "    N |  bridge p50   p95   p99   max |   floor p50   p95   p99   max |"
        " added p50   p99 | ratio p50  p99"
    )
    for p in points:
        b, f = p["bridge"]["latency_ms"], p["floor"]["latency_ms"]
        added = [None if b[q] is None or f[q] is None else b[q] - f[q] for q in ("p50", "p99")]
        lines.append(
            f"{p['n']:5d} | {_f(b['p50'], 10)}{_f(b['p95'])}{_f(b['p99'])}{_f(b['max'])} |"
            f" {_f(f['p50'], 9)}{_f(f['p95'])}{_f(f['p99'])}{_f(f['max'])} |"
            f" {_f(added[0], 9)}{_f(added[1])} |"
            f" {_x(p['ratios']['latency_p50'])}{_x(p['ratios']['latency_p99'])}"
        )
    lines.append(
        "\ncloud -> room tone onset, ms (send of a burst -> first loud frame at the listening phone)"
    )
    lines.append(
        "    N | talk |  bridge p50   p95   p99   max miss |   floor p50   p95   p99   max miss |"
        " added p50  ratio p50"
    )
    for p in points:
        b, f = p["bridge"], p["floor"]
        bo, fo = b["onset_ms"], f["onset_ms"]
        added = None if bo["p50"] is None or fo["p50"] is None else bo["p50"] - fo["p50"]
        lines.append(
            f"{p['n']:5d} | {p['talkback_sessions']:4d} | {_f(bo['p50'], 10)}{_f(bo['p95'])}{_f(bo['p99'])}"
            f"{_f(bo['max'])} {b['tones_missed']:3d}/{b['tones_sent']:<3d}|"
            f" {_f(fo['p50'], 9)}{_f(fo['p95'])}{_f(fo['p99'])}{_f(fo['max'])}"
            f" {f['tones_missed']:3d}/{f['tones_sent']:<3d}|"
            f" {_f(added, 9)} {_x(p['ratios']['onset_p50'])}"
        )
    lines.append("\nper session (bridge vs floor): CPU % of one core, RSS MiB above the idle process, tasks")
    lines.append(
        "    N | CPU%/s bridge  floor  ratio | MiB/s bridge  floor  ratio | tasks/s trio aio | floor aio"
        " | idle RSS br/fl MiB | marginal MiB/s br/fl"
    )
    for p in points:
        b, f = p["bridge"], p["floor"]
        lines.append(
            f"{p['n']:5d} | {_f(b['cpu_pct_per_session'], 13, 2)}{_f(f['cpu_pct_per_session'], 7, 2)}"
            f" {_x(p['ratios']['cpu'])} |"
            f" {_f(b['rss_per_session_mib'], 12, 2)}{_f(f['rss_per_session_mib'], 7, 2)}"
            f" {_x(p['ratios']['rss'])} | {_f(b['tasks_per_session']['trio'], 12, 1)}"
            f"{_f(b['tasks_per_session']['asyncio'], 4, 1)} | {_f(f['tasks_per_session']['asyncio'], 9, 1)}"
            f" | {b['rss_idle_mib']:6.1f} / {f['rss_idle_mib']:5.1f}    "
            f" | {_f(b.get('rss_marginal_mib_per_session'), 7, 2)}"
            f" / {_f(f.get('rss_marginal_mib_per_session'), 5, 2)}"
        )
    lines.append(
        "\nfile descriptors of the measured process (/proc/<pid>/fd; per session = (at N - idle) / N, the"
        " first room's one-time ~13 included; marginal = between sweep points)"
    )
    lines.append("    N | idle br/fl | at N br/fl | fds/s bridge  floor | marginal fds/s br/fl")
    for p in points:
        b, f = p["bridge"], p["floor"]
        lines.append(
            f"{p['n']:5d} | {b['fds_idle']:4d} / {f['fds_idle']:<3d} | {b['fds']:4d} / {f['fds']:<4d} |"
            f" {_f(b['fds_per_session'], 12, 1)}{_f(f['fds_per_session'], 7, 1)} |"
            f" {_f(b.get('fds_marginal_per_session'), 10, 1)} / {_f(f.get('fds_marginal_per_session'), 5, 1)}"
        )
    lines.append("\nCPU % of one core per session by thread group (bridge / floor)")
    lines.append("    N | " + " | ".join(f"{g:>15s} br/fl" for g in GROUPS))
    for p in points:
        bt, ft = p["bridge"]["thread_cpu_pct_per_session"], p["floor"]["thread_cpu_pct_per_session"]
        lines.append(f"{p['n']:5d} | " + " | ".join(f"{bt[g]:11.2f} / {ft[g]:5.2f}" for g in GROUPS))
    lines.append("\ndrops and load (window of steady traffic)")
    lines.append(
        "    N | q_dropped pkts_lost | missing br/fl of sent | gen CPU% br/fl | cloud CPU% |"
        " server CPU% br/fl | send lag p99 ms | tasks back"
    )
    for p in points:
        b, f = p["bridge"], p["floor"]
        bl, fl = b["load"], f["load"]
        lag = max(bl["send_lag_ms"]["p99"] or 0, fl["send_lag_ms"]["p99"] or 0)
        lines.append(
            f"{p['n']:5d} | {b['queue_dropped_chunks']:9d} {b['packets_lost']:9d} |"
            f" {b['packets_missing']:5d} / {f['packets_missing']:<5d} of {b['packets_sent']:<6d} |"
            f" {bl['phones_cpu_pct']:6.1f} / {fl['phones_cpu_pct']:5.1f} | {bl['cloud_cpu_pct']:10.1f} |"
            f" {_f(bl['server_cpu_pct'], 9)} / {_f(fl['server_cpu_pct'], 5)} | {lag:15.1f} |"
            f" {'yes' if b['tasks_back_to_idle'] else 'NO'}"
        )
    for p in points:
        for warning in p["warnings"]:
            lines.append(f"WARNING N={p['n']}: {warning}")
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return False
    ns = [p["n"] for p in points]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))

    def series(ax: Any, title: str, ylabel: str, getters: list[tuple[str, Any, str]]) -> None:
        for label, get, style in getters:
            ys = [get(p) for p in points]
            color = "tab:blue" if label.startswith("bridge") else "tab:orange"
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
        ],
    )
    series(
        axes[0][1],
        "RSS per session (above idle)",
        "MiB",
        [
            ("bridge", lambda p: p["bridge"]["rss_per_session_mib"], "o-"),
            ("floor", lambda p: p["floor"]["rss_per_session_mib"], "s--"),
        ],
    )
    series(
        axes[1][0],
        "room -> cloud latency",
        "ms",
        [
            ("bridge p50", lambda p: p["bridge"]["latency_ms"]["p50"], "o-"),
            ("bridge p99", lambda p: p["bridge"]["latency_ms"]["p99"], "o:"),
            ("floor p50", lambda p: p["floor"]["latency_ms"]["p50"], "s--"),
            ("floor p99", lambda p: p["floor"]["latency_ms"]["p99"], "s:"),
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
    fig.suptitle("livekit-bridge load vs the bare-SDK floor (same phones, same rooms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
