"""Calling Trio from grpclib's asyncio handlers, and turning bridge errors into gRPC statuses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from trio_asyncio import trio_as_aio

from ..errors import (
    AudioFormatError,
    BridgeError,
    CapacityError,
    InvalidRequestError,
    NotAllowedError,
    SessionNotFoundError,
    ShuttingDownError,
)
from ..session import StreamEnd, StreamEndReason

__all__ = ["grpc_error", "in_trio", "stream_end_error"]

P = ParamSpec("P")
T = TypeVar("T")

_STATUS: list[tuple[type[BridgeError], Status]] = [
    (InvalidRequestError, Status.INVALID_ARGUMENT),
    (NotAllowedError, Status.PERMISSION_DENIED),
    (AudioFormatError, Status.INVALID_ARGUMENT),
    (SessionNotFoundError, Status.NOT_FOUND),
    (ShuttingDownError, Status.UNAVAILABLE),
    (CapacityError, Status.RESOURCE_EXHAUSTED),
]


_STREAM_END_STATUS = {
    StreamEndReason.DRAINED: Status.UNAVAILABLE,
    StreamEndReason.SHUTDOWN: Status.UNAVAILABLE,
    StreamEndReason.SESSION_ENDED: Status.UNAVAILABLE,
    StreamEndReason.BROKEN: Status.UNAVAILABLE,
    StreamEndReason.BAD_AUDIO: Status.INVALID_ARGUMENT,
    StreamEndReason.TRACK_UNPUBLISHABLE: Status.FAILED_PRECONDITION,
}
"""How a StreamAudio call that did not end cleanly ends: UNAVAILABLE means "join again"."""


def stream_end_error(end: StreamEnd) -> GRPCError:
    """The status a StreamAudio call ends with when ``end`` is not a clean end."""
    if isinstance(end.cause, GRPCError):  # refused by the RPC layer itself: as it said
        return end.cause
    return GRPCError(_STREAM_END_STATUS.get(end.reason, Status.UNAVAILABLE), end.message)


def grpc_error(err: BridgeError) -> GRPCError:
    for kind, status in _STATUS:
        if isinstance(err, kind):
            return GRPCError(status, str(err))
    return GRPCError(Status.INTERNAL, str(err))


def _lone_bridge_error(group: BaseExceptionGroup[BaseException]) -> BridgeError | None:
    leaves = list(_leaves(group))
    if len(leaves) == 1 and isinstance(leaves[0], BridgeError):
        return leaves[0]
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def in_trio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run the Trio function ``fn`` from an asyncio handler: one crossing per call.

    A BridgeError (also one alone inside an exception group: grpclib must never see a group)
    becomes the matching GRPCError; cancelling the handler cancels ``fn``.
    """
    try:
        return await trio_as_aio(fn)(*args, **kwargs)  # type: ignore[no-any-return]
    except BridgeError as err:
        raise grpc_error(err) from None
    except BaseExceptionGroup as group:
        lone = _lone_bridge_error(group)
        if lone is None:
            raise
        raise grpc_error(lone) from None
