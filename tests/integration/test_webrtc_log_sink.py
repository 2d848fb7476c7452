"""The quiet copy of the SDK's native library (livekit_io/native_library.py) on a real server: the
wheel's library forwards libwebrtc's verbose log lines (a hex dump of every SCTP packet) to Python
for every data packet; the copy the bridge loads forwards none, and delivers the same packets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.livekit_io.native_library import quiet_library, shipped_library
from support.flows import new_room

pytestmark = pytest.mark.livekit

CENSUS = Path(__file__).parent.parent / "support" / "log_census.py"
PACKETS = 50


def _census(livekit, library: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    room = new_room()
    env = {**os.environ, "LIVEKIT_LIB_PATH": str(library)}
    argv = [sys.executable, str(CENSUS), livekit.url, livekit.token("rx", room), livekit.token("tx", room)]
    done = subprocess.run([*argv, str(PACKETS)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_quiet_copy_forwards_no_verbose_line_per_packet_and_the_wheels_library_does(
    livekit_server, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    quiet = quiet_library(tmp_path)
    assert quiet is not None, "the installed livekit wheel is not the one the patch is for"
    shipped = _census(livekit_server, shipped_library())
    patched = _census(livekit_server, quiet)
    print(f"{PACKETS} packets; log records in Python: wheel's library {shipped}, quiet copy {patched}")
    assert shipped["received"] == patched["received"] == PACKETS
    shipped_debug = shipped["records"].get("debug", 0)  # type: ignore[attr-defined]
    patched_debug = patched["records"].get("debug", 0)  # type: ignore[attr-defined]
    assert shipped_debug >= 2 * PACKETS  # measured: ~12 per packet (sender and receiver in one process)
    assert patched_debug <= PACKETS // 10
