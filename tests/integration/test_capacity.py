"""Capacity: a full bridge refuses new users clearly, says so to probes and metrics, and takes them
again as soon as a place frees; replacing a user's own session never counts as one more."""

from __future__ import annotations

import httpx
import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import LeaveRoomRequest
from bridge.capacity import FDS_PER_SESSION, default_max_sessions, raise_open_file_limit
from conftest import running_bridge
from support import participants
from support.flows import join, new_room
from support.scrape import free_port, scrape

pytestmark = pytest.mark.livekit


async def _probe(port: int, path: str) -> tuple[int, str]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}")
    return response.status_code, response.text.strip()


async def test_a_full_bridge_answers_resource_exhausted_and_is_not_ready(aio_loop, livekit_server) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    with trio.fail_after(40):
        async with running_bridge(livekit_server, max_sessions=2, metrics_port=port) as bridge:
            room = new_room()
            assert await _probe(port, "/readyz") == (200, "ready")
            assert (await join(bridge, "cap-a", room)).success
            assert (await join(bridge, "cap-b", room)).success
            assert await _probe(port, "/readyz") == (503, "full: 2 of 2 sessions")
            assert await _probe(port, "/healthz") == (200, "ok")  # full is not unhealthy
            with pytest.raises(GRPCError) as refused:
                await join(bridge, "cap-c", room)
            assert refused.value.status is Status.RESOURCE_EXHAUSTED
            assert "bridge full: it holds 2 sessions (BRIDGE_MAX_SESSIONS)" in str(refused.value.message)
            identities = await aio_as_trio(participants.list_identities)(
                livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret, room
            )
            assert "bridge-cap-c" not in identities  # refused before any room connection
            # A user re-joining replaces their own session: not one more.
            again = await join(bridge, "cap-b", room)
            assert again.success and again.metadata["replaced"] == "true"
            samples = await scrape(port)
            assert samples["livekit_bridge_capacity_sessions"] == 2
            assert samples["livekit_bridge_load"] == 1.0
            assert samples["livekit_bridge_joins_total{result=full}"] == 1
            # A place frees: the next user gets it, and the bridge is ready again meanwhile.
            await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id="cap-a"))
            assert await _probe(port, "/readyz") == (200, "ready")
            assert (await join(bridge, "cap-c", room)).success
            # Shutting down is not ready either (the metrics endpoint itself stops soon after).
            bridge.state.registry.shutting_down = True
            assert await _probe(port, "/readyz") == (503, "shutting down")


def test_the_default_capacity_follows_cores_and_the_open_file_limit() -> None:
    assert default_max_sessions(cores=2, open_files=1_000_000) == 50
    assert default_max_sessions(cores=8, open_files=512) == (512 - 128) // FDS_PER_SESSION
    assert default_max_sessions(cores=1, open_files=64) == 1
    assert raise_open_file_limit() >= 1024
