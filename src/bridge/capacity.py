"""How many sessions one bridge process takes, and the open-file limit that allows it.

Sizing rule (`python -m bench.load` on a 2-core machine): a mic session costs ~3 % of a core, so ~25
sessions fill one with latency still near the SDK's own floor. Descriptors: a session's room holds 3
(the signal WebSocket and one UDP socket per local address, ICE gathered once: livekit_io/room.py),
and each PlayAudio in flight one TCP connection (at most ``BRIDGE_MAX_PLAYBACKS_PER_SESSION``, 4 by
default): 8 at steady state, which ``tests/integration/test_descriptors.py`` holds sessions joined
one after another to. Sessions that join in a burst (a failover) can hold up to ~16: rooms connect
in turn but wait at most 0.1 s for it (failover gaps matter more), and a room that connects while
another still gathers ICE gathers again. ``FDS_PER_SESSION`` = 16 sizes for that.
``BRIDGE_MAX_SESSIONS=0`` (the default) takes the smaller of the two limits after raising the soft
``nofile`` limit to the hard one.
"""

from __future__ import annotations

import logging
import os
import resource

__all__ = [
    "FDS_PER_SESSION",
    "SESSIONS_PER_CORE",
    "STEADY_FDS_PER_SESSION",
    "default_max_sessions",
    "raise_open_file_limit",
]

log = logging.getLogger(__name__)

SESSIONS_PER_CORE = 25
STEADY_FDS_PER_SESSION = 8
"""Measured: 3 per session joined one after another (a bridge subprocess); + 4 playback fetches + 1."""
FDS_PER_SESSION = 16
"""What sizing assumes: a burst of joins held 8.6 (5 at once, CI) to 15.6 (10 at once) per session."""
_FDS_RESERVED = 128
"""Descriptors the process needs besides sessions: listeners, the cloud's connections, logs, DNS, and
the SDK's native runtime (~10, from the first room on)."""
_NOFILE_CEILING = 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft ``nofile`` limit to the hard one (capped at 2**20); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _NOFILE_CEILING if hard == resource.RLIM_INFINITY else min(hard, _NOFILE_CEILING)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as err:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, err)
    return _NOFILE_CEILING if soft == resource.RLIM_INFINITY else soft


def default_max_sessions(cores: int | None = None, open_files: int | None = None) -> int:
    """The sizing rule above: at least 1."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    by_cpu = SESSIONS_PER_CORE * cores
    by_files = (open_files - _FDS_RESERVED) // FDS_PER_SESSION
    return max(1, min(by_cpu, by_files))
