"""Routing a pool (issue #13 items 5 and 6): three bridges behind HAProxy running
deploy/haproxy/haproxy.cfg, the real LiveKit server, 30 phones sending numbered mic packets and the
TypeScript client as the cloud (one LiveKitGrpcClient per user, all through the proxy).

The tests of the first pool run in order, as stages of one scenario (starting 30 users costs ~10 s):
spread -> SIGKILL of one bridge -> rolling SIGTERM restart of all three -> no orphans, no leaks.
Mic gaps are measured at the cloud from the packets' counters (bridge.testing.pool.mic_gaps): the
longest run of consecutive packets a user's phone sent that never reached the cloud.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pool_support import busiest_processes

from bridge.testing.devserver import LOST_LEAVE_TIMEOUT_S
from bridge.testing.pool import Gap, Pool, balance_bound

USERS = 30
BRIDGES = 3
KILL_GAP_LIMIT_MS = 2000
ROLLING_P99_LIMIT_MS = 1000


def summary(gaps: dict[str, Gap], users: list[str]) -> str:
    longest = [gaps[u].longest_ms for u in users]
    if not longest:
        return "no users"
    p50, p99 = np.percentile(longest, [50, 99])
    missing = sum(gaps[u].missing for u in users)
    dups = sum(gaps[u].duplicates for u in users)
    return (
        f"{len(users)} users: gap p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(longest):.0f} ms; "
        f"{missing} packets missing, {dups} duplicates"
    )


def rejoin_times_ms(pool: Pool, since: float) -> list[float]:
    """How long each re-join after ``since`` took at the cloud: from the stream's end ("reconnecting")
    to the new stream ("open"), i.e. backoff + JoinRoom (a LiveKit room connect on the new bridge)."""
    out = []
    for user in pool.cloud.request("received")["users"].values():
        ended = None
        for state, at_ms, _ in user["states"]:
            if at_ms / 1000 < since:
                continue
            if state == "reconnecting" and ended is None:
                ended = at_ms
            elif state == "open" and ended is not None:
                out.append(at_ms - ended)
                ended = None
    return out


def task_counts(pool: Pool) -> dict[str, tuple[int, int]]:
    out = {}
    for bridge in pool.bridges:
        if not bridge.running:
            continue
        metrics = bridge.metrics()
        out[bridge.name] = (
            int(metrics['livekit_bridge_tasks{side="trio"}']),
            int(metrics['livekit_bridge_tasks{side="asyncio"}']),
        )
    return out


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    started = time.monotonic()
    # One spare: the rolling restart's surge bridge.
    with Pool(bridges_n=BRIDGES, users_n=USERS, spare_n=1) as running:
        running.proxy.stop_checks()  # a check in flight would be counted (see the leak test)
        time.sleep(0.5)
        idle = set(task_counts(running).values())
        running.proxy.start_checks()
        assert len(idle) == 1, idle  # identical bridges, identical idle task counts
        running.baseline = idle.pop()  # type: ignore[attr-defined]
        joined = running.connect()
        assert joined["failed"] == {}, joined
        print(
            f"pool up and {USERS} users joined in {time.monotonic() - started:.1f} s "
            f"(joins: {joined['ms']} ms)"
        )
        time.sleep(2)
        yield running


def wait_all_held(pool: Pool, timeout_s: float = 15.0) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout_s
    while True:
        holders = pool.holders()
        if all(len(h) == 1 for h in holders.values()) or time.monotonic() > deadline:
            return holders
        time.sleep(0.25)


def held_detail(pool: Pool, holders: dict[str, list[str]]) -> str:
    """For an assertion message: who holds each user held by no bridge or by several, and what the
    cloud's client of that user went through (its last state changes, with their details)."""
    odd = sorted(u for u, h in holders.items() if len(h) != 1)
    users = pool.cloud.request("received")["users"]
    lines = [f"{len(odd)} of {len(holders)} users not held by exactly one bridge:"]
    for user in odd:
        states = users.get(user, {}).get("states", [])[-6:]
        lines.append(f"  {user}: held by {holders[user]}; the cloud's last states: {states}")
    return "\n".join(lines)


def test_users_spread_within_the_balance_factor(pool: Pool) -> None:
    sessions = pool.sessions()
    bound = balance_bound(pool.proxy.template, USERS, BRIDGES)
    print(f"sessions per bridge: {sessions} (bound: {bound}, hash-balance-factor of the shipped config)")
    assert sum(sessions.values()) == USERS
    assert max(sessions.values()) <= bound
    holders = pool.holders()
    assert all(len(h) == 1 for h in holders.values()), holders
    sticky = pool.proxy.sticky()
    assert {u: h[0] for u, h in holders.items()} == {u: sticky[u] for u in holders}, (
        "the stick table says where each session is"
    )


def test_sigkill_of_one_bridge(pool: Pool) -> None:
    before = pool.holders()
    victim = pool.bridges[0]
    moved = sorted(u for u, h in before.items() if h == [victim.name])
    stayed = sorted(u for u in before if u not in moved)
    assert moved, "the killed bridge held sessions"
    killed_at = time.time()
    victim.kill()
    time.sleep(5)
    gaps = pool.gaps((killed_at - 1.0, time.time() - 1.0))
    print(f"SIGKILL {victim.name}: moved {summary(gaps, moved)}")
    print(f"SIGKILL {victim.name}: others {summary(gaps, stayed)}")
    worst = {u: gaps[u].longest_ms for u in moved if gaps[u].longest_ms > KILL_GAP_LIMIT_MS}
    assert not worst, f"mic audio did not flow again within {KILL_GAP_LIMIT_MS} ms: {worst}"
    assert all(gaps[u].missing == 0 for u in stayed), {u: gaps[u] for u in stayed if gaps[u].missing}
    holders = wait_all_held(pool)
    assert all(len(h) == 1 for h in holders.values()), held_detail(pool, holders)
    assert all(h[0] != victim.name for h in holders.values()), holders
    victim.start()
    pool.proxy.wait_servers(pool.running())


def test_rolling_sigterm_restart(pool: Pool) -> None:
    """A rollout as the chart runs it (maxSurge 1, maxUnavailable 0): a new bridge is started and in
    the ring before an old one gets SIGTERM, whose users re-join on the ready bridges. The next new
    bridge starts once those re-joins are done: on a cluster it starts on another node, here its
    start-up (~2 s of CPU) would compete for the same two cores as the re-joins being measured."""
    started = time.time()
    surge = pool.bridges[BRIDGES]
    for old in pool.bridges[:BRIDGES]:
        surge.start()
        pool.proxy.wait_servers(pool.running())
        held = old.sessions()
        took = old.terminate()
        pool.proxy.wait_servers(pool.running())
        holders = wait_all_held(pool)
        assert all(len(h) == 1 for h in holders.values()), held_detail(pool, holders)
        print(
            f"{surge.name} up; {old.name} drained {held} sessions and exited in {took:.2f} s; all re-joined"
        )
        surge = old  # the next new bridge
    time.sleep(3)
    gaps = pool.gaps((started - 1.0, time.time() - 1.0))
    print(f"rolling restart: {summary(gaps, pool.users)}")
    rejoins = rejoin_times_ms(pool, started)
    rejoined = (
        f"{len(rejoins)} re-joins took p50 {np.percentile(rejoins, 50):.0f} ms, max {max(rejoins):.0f} ms"
        if rejoins
        else ""
    )
    print(f"rolling restart: {rejoined} (stream end to new stream, at the cloud)")
    longest = [gaps[u].longest_ms for u in pool.users]
    p99 = float(np.percentile(longest, 99))
    worst = sorted(((gaps[u].longest_ms, u) for u in pool.users), reverse=True)[:5]
    # Not loosened: on a quiet 2-core machine p99 was 942 ms; under other jobs' load (load average
    # 6-10) the re-joins' LiveKit connects take seconds and p99 exceeds 1 s (see docs/design/deploy.md).
    assert p99 <= ROLLING_P99_LIMIT_MS, (
        f"mic gap p99 {p99:.0f} ms; worst {worst}; {rejoined}; load {os.getloadavg()}; "
        f"busiest now: {busiest_processes()}"
    )


def test_no_participant_without_a_session_and_no_leaked_tasks(pool: Pool) -> None:
    holders = wait_all_held(pool)
    assert all(len(h) == 1 for h in holders.values()), held_detail(pool, holders)
    rooms = pool.participants()
    expected = {f"room-{u}": sorted([u, f"bridge-{u}"]) for u in pool.users}
    assert {r: rooms.get(r) for r in expected} == expected
    status: dict[str, Any] = pool.cloud.request("status")["users"]
    assert all(s.get("connected") for s in status.values()), status

    pool.cloud.request("dispose", timeout_s=60)
    assert pool.sessions() == dict.fromkeys(pool.running(), 0)
    # The proxy's connections to a bridge are tasks there too (trio-asyncio's socket watchers), and
    # HAProxy keeps idle ones for reuse; its health checks are short-lived tasks. Stop it, then count.
    pool.proxy.close()
    idle: tuple[int, int] = pool.baseline  # type: ignore[attr-defined]
    deadline = time.monotonic() + 15
    while True:
        counts = task_counts(pool)
        if set(counts.values()) == {idle} or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    print(f"tasks (trio, asyncio) per bridge after every user left: {counts}; a fresh idle bridge: {idle}")
    assert counts == dict.fromkeys(pool.running(), idle)
    # The bridges have left their rooms; the LiveKit server drops the participants as they leave.
    left = _bridges_still_in_rooms(pool, within_s=10)
    if pool.livekit.leaves_lost_on_the_wire(_bridge_identities(left)):
        # The server never read these leaves (devserver.leave_lost_on_the_wire): its own timeout.
        print(f"the server never read the leave in {sorted(left)}; waiting for its own timeout")
        left = _bridges_still_in_rooms(pool, within_s=LOST_LEAVE_TIMEOUT_S)
    assert left == {}, (
        f"bridge participants still in rooms after every session ended: {left}\n"
        f"the LiveKit server's log of them:\n{pool.livekit.log_of_participants(_bridge_identities(left))}"
    )


def _bridge_identities(left: dict[str, list[str]]) -> dict[str, list[str]]:
    """room -> the identity of the bridge participant the pool's user of that room has."""
    return {room: [f"bridge-{room[5:]}"] for room in left}


def _bridges_still_in_rooms(pool: Pool, within_s: float) -> dict[str, list[str]]:
    """Rooms that still list a bridge participant after polling the server for ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        left = {r: m for r, m in pool.participants().items() if any(p.startswith("bridge-") for p in m)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


def test_users_the_ring_moves_rejoin_make_before_break() -> None:
    """A bridge added while the proxy lost its stick table (a restart without `peers`): each user's
    next call goes by the hash; those now hashed elsewhere get NOT_FOUND, re-join there with their
    stream still open, and the call succeeds."""
    with Pool(bridges_n=2, users_n=10, spare_n=1) as pool:
        joined = pool.connect()
        assert joined["failed"] == {}, joined
        spare = pool.bridges[2]
        spare.start()
        pool.proxy.wait_servers(pool.running())
        time.sleep(1)
        before = pool.holders()
        started = time.time()
        pool.proxy.command("clear table bridges")
        status: dict[str, Any] = pool.cloud.request("status")["users"]
        time.sleep(3)
        after = wait_all_held(pool)
        moved = sorted(u for u in pool.users if after[u] != before[u])
        received = pool.cloud.request("received")["users"]
        # Re-joined (NOT_FOUND, then JoinRoom): the moved users, and any whose JoinRoom landed on
        # the bridge it already was on (bounded load may pick it again).
        rejoined = sorted(u for u, v in received.items() if v["counters"]["handovers"])
        untouched = [u for u in pool.users if u not in rejoined]
        gaps = pool.gaps((started - 1.0, time.time() - 1.5))
        print(f"ring move: {len(moved)} of {len(pool.users)} users moved, {len(rejoined)} re-joined")
        print(f"ring move: re-joined {summary(gaps, rejoined)}")
        print(f"ring move: untouched {summary(gaps, untouched)}")
        bad = [
            u for u in pool.users if not status[u].get("connected") or gaps[u].longest_ms > KILL_GAP_LIMIT_MS
        ]
        details = {
            u: (status[u], before[u], after[u], gaps[u], received[u]["counters"], received[u]["states"][-6:])
            for u in bad
        }
        logs = {b.name: b.describe() for b in pool.bridges}
        assert bad == [], f"{details}\n{json.dumps(logs, indent=1)}"
        assert moved, "the new bridge took some users"
        assert set(moved) <= set(rejoined)
        assert all(len(h) == 1 for h in after.values()), after
        rooms = pool.participants()
        assert all(sorted(rooms[f"room-{u}"]) == sorted([u, f"bridge-{u}"]) for u in pool.users), rooms
        assert all(gaps[u].missing == 0 for u in untouched), {u: gaps[u] for u in untouched}


def test_a_full_bridge_gets_no_new_joins() -> None:
    with Pool(bridges_n=3, users_n=12, per_bridge_env={0: {"BRIDGE_MAX_SESSIONS": "2"}}) as pool:
        joined = pool.connect()
        joined_at = time.time()
        sessions = pool.sessions()
        print(f"b0 full at 2 sessions: {sessions}; 12 joins took {joined['ms']} ms")
        assert joined["failed"] == {}, joined
        assert sessions["b0"] <= 2
        assert sum(sessions.values()) == 12
        assert pool.bridges[0].readyz() == 503
        # HAProxy checks /readyz every 250 ms (fall 1): the full bridge leaves the ring at its next
        # check, which on a loaded CI machine came after the last join answered.
        pool.proxy.wait_servers({"b1", "b2"}, timeout_s=3.0)
        # A steady second, from 2 s after the last JoinRoom answered, and 1.5 s after it for packets
        # in flight. Counted from 0.5 s after the joins, a clean-clone CI run once missed one
        # reliable packet of user-10 (users join 10 at a time, so it was among the last few).
        window = (joined_at + 2.0, joined_at + 3.0)
        time.sleep(max(0.0, window[1] + 1.5 - time.time()))
        gaps = pool.gaps(window)
        assert all(g.missing == 0 for g in gaps.values()), {
            u: (g, pool.holders()[u]) for u, g in gaps.items() if g.missing
        }
        # Calls of the full bridge's users still reach it while it is out of the ring (option
        # persist): GetStatus finds each session where it is, nobody is moved.
        status: dict[str, Any] = pool.cloud.request("status")["users"]
        assert all(s.get("connected") for s in status.values()), status
        received = pool.cloud.request("received")["users"]
        assert {u: v["counters"]["handovers"] for u, v in received.items()} == dict.fromkeys(pool.users, 0)
        assert "b0" not in pool.proxy.servers_up()
