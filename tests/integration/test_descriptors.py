"""File descriptors per session, counted in the bridge process at steady state.

The bridge runs as a subprocess (``python -m bridge``), so its ``/proc/<pid>/fd`` holds only its
own descriptors, not those of the phones this test runs. Each session is the full shape: JoinRoom
with a phone as the target, a StreamAudio call attached, cloud PCM streamed on track 0 (so the
bridge publishes a track), and the phone's microphone packets flowing to the cloud.

The first session is opened before the baseline: the SDK's native runtime (its event loops,
eventfds and sockets, ~10 descriptors kept for the life of the process) starts with the first room,
and is the process's cost, not a session's. Then ``N`` more sessions join one after another and the
count is read once it has stopped changing: ``capacity.STEADY_FDS_PER_SESSION`` must hold. (A burst
of joins can hold more, up to ``capacity.FDS_PER_SESSION``: rooms that connect together can each
gather ICE candidates again, see ``livekit_io.room.rtc_configuration``.)
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import trio
from livekit import rtc
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import (
    AudioChunk,
    JoinRoomRequest,
    LeaveRoomRequest,
)
from bridge.capacity import STEADY_FDS_PER_SESSION
from bridge.testing.cloud import CloudStream
from bridge.testing.devserver import LocalLiveKitServer
from support.bridge_process import BridgeProcess, bridge_process, connect_phone, microphone
from support.flows import new_room, wait_until

pytestmark = pytest.mark.livekit

N = 5
"""Sessions measured, on top of the one opened before the baseline."""
QUIET_S = 3.0
"""The count is read once it has not changed for this long (ICE gathering, connection setup)."""
MIN_WAIT_S = 5.0
"""...and not before this long after the last session carries audio both ways (the SDK's default
gathering policy showed its peak about 5 s after the joins)."""


# --------------------------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------------------------


def count_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _socket_kinds(pid: int) -> dict[str, str]:
    """Socket inode -> ``tcp``, ``tcp listen``, ``udp``, ``unix``... from /proc/<pid>/net."""
    kinds: dict[str, str] = {}
    for table in ("tcp", "tcp6", "udp", "udp6", "unix"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as f:
                rows = [line.split() for line in f.readlines()[1:]]
        except OSError:
            continue
        for row in rows:
            if table == "unix":
                kinds[row[6]] = "unix socket"
            else:
                listening = table.startswith("tcp") and row[3] == "0A"
                kinds[row[9]] = f"{table}{' listen' if listening else ''} socket"
    return kinds


def fds_by_kind(pid: int) -> Counter[str]:
    """What the descriptors are: sockets by protocol, pipes, eventfds, epoll, files."""
    sockets, kinds = _socket_kinds(pid), Counter[str]()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        inode = re.fullmatch(r"socket:\[(\d+)\]", target)
        if inode:
            kinds[sockets.get(inode.group(1), "other socket")] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("anon_inode:"):
            kinds[target.removeprefix("anon_inode:")] += 1
        else:
            kinds["file"] += 1
    return kinds


async def settled_fds(pid: int, timeout_s: float = 30.0) -> int:
    """The descriptor count once it has stayed the same for QUIET_S (bounded)."""
    last, since = count_fds(pid), trio.current_time()
    with trio.move_on_after(timeout_s):
        while trio.current_time() - since < QUIET_S:
            await trio.sleep(0.25)
            now = count_fds(pid)
            if now != last:
                last, since = now, trio.current_time()
    return last


def describe(before: Counter[str], after: Counter[str], sessions: int) -> str:
    rows = [f"{'kind':<20} {'baseline':>8} {'at N':>6} {'per session':>11}"]
    for kind in sorted(set(before) | set(after), key=lambda k: -(after[k] - before[k])):
        change = (after[kind] - before[kind]) / sessions
        rows.append(f"{kind:<20} {before[kind]:>8} {after[kind]:>6} {change:>11.1f}")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# one session: a phone (asyncio side, in this process) and the cloud's StreamAudio call
# --------------------------------------------------------------------------------------------


def _publishes_audio(room: rtc.Room, identity: str) -> bool:
    return any(
        participant.identity == identity
        and any(p.kind == rtc.TrackKind.KIND_AUDIO for p in participant.track_publications.values())
        for participant in room.remote_participants.values()
    )


@dataclass(eq=False)
class Session:
    index: int
    room_name: str
    phone: rtc.Room
    cloud: CloudStream
    talking: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def user(self) -> str:
        return self.cloud.user_id


async def _talk(session: Session) -> None:
    """The cloud's side: 100 ms of a quiet tone on track 0 every 100 ms, so the bridge publishes it."""
    samples = (np.sin(np.arange(1600) * 2 * np.pi * 440 / 16000) * 3000).astype(np.int16).tobytes()
    chunk = AudioChunk(pcm_data=samples, sample_rate=16000, channels=1, track_id=0)
    with session.talking:
        while True:
            await aio_as_trio(session.cloud.send)(chunk)
            await trio.sleep(0.1)


async def open_session(
    nursery: trio.Nursery, bridge: BridgeProcess, livekit: LocalLiveKitServer, index: int
) -> Session:
    user, room_name = f"fds-user-{index}", new_room()
    phone = await aio_as_trio(connect_phone)(livekit.url, livekit.token(user, room_name))
    request = JoinRoomRequest(
        user_id=user,
        room_name=room_name,
        token=livekit.token(f"bridge-{user}", room_name),
        target_identity=user,
    )
    response = await aio_as_trio(bridge.stub.join_room)(request, timeout=20)
    assert response.success, response.error
    session = Session(index, room_name, phone, CloudStream(bridge.channel, user))
    nursery.start_soon(aio_as_trio(session.cloud.run))
    await session.cloud.opened.wait()
    nursery.start_soon(aio_as_trio(microphone), phone, index)
    nursery.start_soon(_talk, session)
    return session


async def carries_audio_both_ways(session: Session) -> None:
    """Mic packets reach the cloud, and the phone sees the track the bridge publishes for the cloud."""
    heard = len(session.cloud.received)
    await wait_until(lambda: len(session.cloud.received) >= heard + 5, 15, f"mic audio of {session.user}")
    await wait_until(
        lambda: _publishes_audio(session.phone, f"bridge-{session.user}"), 15, f"{session.user}'s track"
    )


async def close_session(bridge: BridgeProcess, session: Session) -> None:
    session.talking.cancel()
    await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=session.user), timeout=20)
    await session.cloud.ended.wait()


# --------------------------------------------------------------------------------------------


async def test_a_session_holds_at_most_fds_per_session_descriptors(
    aio_loop, livekit_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(150):
        async with (
            bridge_process(livekit_server, tmp_path / "bridge.log", kind=BridgeProcess) as bridge,
            trio.open_nursery() as nursery,
        ):
            idle = count_fds(bridge.pid)
            first = await open_session(nursery, bridge, livekit_server, 0)
            await carries_audio_both_ways(first)
            baseline = await settled_fds(bridge.pid)
            baseline_kinds = fds_by_kind(bridge.pid)

            sessions: list[Session] = []

            async def add(index: int) -> None:
                sessions.append(await open_session(nursery, bridge, livekit_server, index))

            for index in range(1, N + 1):  # one after another, as users arrive
                await add(index)
            for session in sessions:
                await carries_audio_both_ways(session)
            await trio.sleep(MIN_WAIT_S)
            at_n = await settled_fds(bridge.pid)
            kinds = fds_by_kind(bridge.pid)
            for session in sessions:  # still flowing when counted
                await carries_audio_both_ways(session)

            per_session, table = (at_n - baseline) / N, describe(baseline_kinds, kinds, N)
            print(
                f"\nbridge descriptors: idle {idle}, with 1 session {baseline}, with {N + 1} sessions {at_n}:"
                f" {per_session:.1f} per session (bound {STEADY_FDS_PER_SESSION})\n{table}"
            )
            assert per_session <= STEADY_FDS_PER_SESSION, table

            # Leaving gives them back: the count returns to the one-session baseline.
            for session in sessions:
                await close_session(bridge, session)
            await wait_until(lambda: count_fds(bridge.pid) <= baseline, 30, "descriptors back to baseline")

            await close_session(bridge, first)
            for session in [first, *sessions]:
                await aio_as_trio(session.phone.disconnect)()
            nursery.cancel_scope.cancel()
