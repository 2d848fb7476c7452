"""A short soak: sessions join and leave continuously; afterwards the bridge has exactly its idle tasks.

The same churn as ``python bench/soak.py`` (which runs it for 10 minutes by default), for about 30 s:
the bridge runs as a subprocess, the driver (cloud client, phones, a loopback HTTP server for
PlayAudio) runs here on a plain asyncio loop. Every session path is exercised: LeaveRoom, a dropped
stream reaped by the idle TTL, a replacing JoinRoom, playbacks that complete, are stopped, or are cut
by LeaveRoom.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bridge.testing.devserver import LocalLiveKitServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import soak

pytestmark = pytest.mark.livekit

CHURN_S = 30.0
SLOTS = 4
RSS_GROWTH_BOUND_MIB = 32.0
"""Growth of the bridge's RSS over the fitted part of the churn (a least-squares line). Seen: 2-6 MiB;
a leak of 1 MiB per session (~40 sessions start in that span) goes past it."""
RSS_AFTER_BOUND_MIB = 96.0
"""RSS after every session left minus RSS before the first one (the SDK's native runtime starts with
the first room, ~20-30 MiB, and stays)."""


def test_churning_sessions_leave_exactly_the_idle_tasks_and_bounded_rss(
    livekit_server: LocalLiveKitServer, tmp_path: Path
) -> None:
    settings = soak.SoakSettings(
        livekit_url=livekit_server.url,
        api_key=livekit_server.api_key,
        api_secret=livekit_server.api_secret,
        seconds=CHURN_S,
        sessions=SLOTS,
        sample_every_s=2.0,
        idle_ttl_s=2.0,
        log_dir=tmp_path,
    )
    result = asyncio.run(soak.run_soak(settings))
    report = soak.format_report(result)
    print(report)

    assert not result.errors, report
    assert set(result.cycles) == set(soak.KINDS), f"not every session path ran: {result.cycles}"
    assert result.chunks_to_cloud > 0, report
    assert result.final.active_sessions == 0, report
    assert result.final.tasks == result.idle.tasks, (
        f"tasks after every session left (trio, asyncio) {result.final.tasks} != idle {result.idle.tasks}\n"
        + report
    )
    growth = result.rss_growth_over_run_mib
    assert growth is not None and growth < RSS_GROWTH_BOUND_MIB, report
    assert result.final_rss_mib - result.idle_rss_mib < RSS_AFTER_BOUND_MIB, report
