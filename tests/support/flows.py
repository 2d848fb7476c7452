"""Small steps many integration tests share."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import trio
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import JoinRoomRequest, JoinRoomResponse


def new_room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


async def join(bridge: Any, user: str, room: str, target: str | None = None) -> JoinRoomResponse:
    """JoinRoom as the cloud does it: the bridge joins as ``bridge-<user>``, listening to ``user``."""
    request = JoinRoomRequest(
        user_id=user,
        room_name=room,
        token=bridge.token(f"bridge-{user}", room),
        target_identity=user if target is None else target,
    )
    response: JoinRoomResponse = await aio_as_trio(bridge.stub.join_room)(request)
    return response


async def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float = 10.0,
    what: str = "condition",
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate``; on timeout fail with ``what`` and, if given, ``detail()`` (the state seen then)."""
    with trio.move_on_after(timeout_s):
        while not predicate():
            await trio.sleep(0.02)
        return
    seen = f": {detail()}" if detail is not None else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{seen}")
