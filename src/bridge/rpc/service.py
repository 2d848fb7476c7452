"""``mentra.livekit.bridge.LiveKitBridge``: thin grpclib handlers over the session registry.

Handlers run on grpclib's asyncio side. Each crosses into Trio once per call (``in_trio``); the only
long-lived call, StreamAudio, then hands its grpclib stream to the session, whose Trio tasks run the
stream's send and receive loops back on the asyncio side (see stream_link.py).

Answers follow the wire contract (../shared/WIRE-CONTRACT.md): malformed requests get a gRPC status,
join failures answer ``success=false`` + ``error``, LeaveRoom/StopAudio for an unknown user answer
``success=false``, ``error="session not found"``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypeVar

import grpclib.const
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from .._gen.mentra.livekit.bridge import (
    AudioChunk,
    BridgeStatusRequest,
    BridgeStatusResponse,
    HealthCheckRequest,
    HealthCheckResponse,
    HealthCheckResponseServingStatus,
    JoinRoomRequest,
    JoinRoomResponse,
    LeaveRoomRequest,
    LeaveRoomResponse,
    PlayAudioEvent,
    PlayAudioRequest,
    StopAudioRequest,
    StopAudioResponse,
)
from ..clock import now_ms
from ..errors import BridgeError, SessionNotFoundError
from ..metrics import RpcTimer
from ..playback import ErrorCode
from ..state import BridgeState
from ..version import VERSION
from .calls import grpc_error, in_trio, stream_end_error
from .requests import RequestTranslator, play_audio_event
from .stream_link import GrpcCloudLink, requested_notices

__all__ = ["SERVICE_NAME", "LiveKitBridgeService"]

SERVICE_NAME = "mentra.livekit.bridge.LiveKitBridge"
END_REASON_KEY = "x-bridge-end-reason"
"""Trailing metadata on StreamAudio calls that end with OK: why the bridge ended the call."""

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")


class LiveKitBridgeService:
    def __init__(self, state: BridgeState) -> None:
        self._state = state
        self._registry = state.registry
        self._requests = RequestTranslator(state.config)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        unary = grpclib.const.Cardinality.UNARY_UNARY

        def handler(name: str, fn: Any, kind: Any, request: type, reply: type) -> tuple[str, Any]:
            measured = self._measured(name, fn, timed=kind is unary)
            return f"/{SERVICE_NAME}/{name}", grpclib.const.Handler(measured, kind, request, reply)

        return dict(
            [
                handler(
                    "StreamAudio",
                    self.stream_audio,
                    grpclib.const.Cardinality.STREAM_STREAM,
                    AudioChunk,
                    AudioChunk,
                ),
                handler("JoinRoom", self.join_room, unary, JoinRoomRequest, JoinRoomResponse),
                handler("LeaveRoom", self.leave_room, unary, LeaveRoomRequest, LeaveRoomResponse),
                handler(
                    "PlayAudio",
                    self.play_audio,
                    grpclib.const.Cardinality.UNARY_STREAM,
                    PlayAudioRequest,
                    PlayAudioEvent,
                ),
                handler("StopAudio", self.stop_audio, unary, StopAudioRequest, StopAudioResponse),
                handler("HealthCheck", self.health_check, unary, HealthCheckRequest, HealthCheckResponse),
                handler("GetStatus", self.get_status, unary, BridgeStatusRequest, BridgeStatusResponse),
            ]
        )

    def _measured(self, method: str, fn: Any, *, timed: bool) -> Any:
        """Count every call by its status; time unary ones (a stream's length says nothing)."""
        metrics = self._state.metrics

        async def call(stream: Any) -> None:
            timer = RpcTimer(metrics, method)
            try:
                try:
                    await fn(stream)
                except BridgeError as err:  # raised on the asyncio side, not through in_trio
                    raise grpc_error(err) from None
            except GRPCError as err:
                timer.done(err.status.name, timed=timed)
                raise
            except asyncio.CancelledError:
                timer.done("CANCELLED", timed=False)
                raise
            except Exception:
                timer.done("INTERNAL", timed=timed)
                log.exception("%s failed", method)
                raise
            timer.done("OK", timed=timed)

        return call

    async def _request(self, stream: Stream[RequestT, Any]) -> RequestT:
        request = await stream.recv_message()
        if request is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "empty request")
        self._state.count_call(stream)
        return request

    async def join_room(self, stream: Stream[JoinRoomRequest, JoinRoomResponse]) -> None:
        message: JoinRoomRequest = await self._request(stream)
        outcome = await in_trio(self._registry.join, self._requests.join(message))
        if outcome.session is None:
            await stream.send_message(JoinRoomResponse(success=False, error=outcome.error))
            return
        room = outcome.session.room
        metadata = {
            "room": room.room_name,
            "identity": room.identity,
            "replaced": str(outcome.replaced).lower(),
        }
        await stream.send_message(
            JoinRoomResponse(
                success=True,
                participant_id=room.participant_id,
                participant_count=room.participant_count,
                metadata=metadata,
            )
        )

    async def leave_room(self, stream: Stream[LeaveRoomRequest, LeaveRoomResponse]) -> None:
        user_id, reason = self._requests.leave(await self._request(stream))
        try:
            await in_trio(self._registry.leave, user_id, reason)
        except GRPCError as err:
            if err.status is not Status.NOT_FOUND:
                raise
            await stream.send_message(LeaveRoomResponse(success=False, error="session not found"))
            return
        await stream.send_message(LeaveRoomResponse(success=True))

    async def stream_audio(self, stream: Stream[AudioChunk, AudioChunk]) -> None:
        timeout = self._state.config.stream_first_message_timeout_s
        try:
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel
                first: AudioChunk | None = await stream.recv_message()
        except TimeoutError:
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"no first StreamAudio message (with user_id) within {timeout:g} s"
            ) from None
        if first is None:
            return  # the client closed without sending anything: nothing to serve
        self._state.count_call(stream)
        if not first.user_id:
            raise GRPCError(Status.INVALID_ARGUMENT, "the first StreamAudio message must carry user_id")
        self._requests.user_id(first.user_id)
        link = GrpcCloudLink(
            stream,
            first,
            out_rate=self._state.config.publish_sample_rate,
            notices=requested_notices(stream.metadata),
        )
        self._state.stream_opened()
        try:
            end = await in_trio(self._registry.serve_stream, link)
        finally:
            self._state.stream_closed()
        if not end.reason.clean:
            raise stream_end_error(end)
        # A clean end still says why (left, replaced, superseded), for people reading client logs.
        await stream.send_trailing_metadata(
            status=Status.OK,
            status_message=end.message,
            metadata={END_REASON_KEY: end.message.encode("ascii", "backslashreplace").decode()},
        )

    async def play_audio(self, stream: Stream[PlayAudioRequest, PlayAudioEvent]) -> None:
        user_id, request = self._requests.play(await self._request(stream))
        playback = await in_trio(self._registry.play, user_id, request)
        try:
            async for event in playback.events:
                await stream.send_message(play_audio_event(event))
        finally:
            if not playback.events.finished:  # the cloud cancelled the call: stop what it asked for
                playback.stop(ErrorCode.STOPPED, "the PlayAudio call was cancelled by the client")

    async def stop_audio(self, stream: Stream[StopAudioRequest, StopAudioResponse]) -> None:
        request = self._requests.stop(await self._request(stream))
        try:
            stopped = await in_trio(
                self._registry.stop_audio,
                request.user_id,
                request.request_id,
                request.track_id,
                request.reason,
            )
        except GRPCError as err:
            if err.status is not Status.NOT_FOUND:
                raise
            await stream.send_message(StopAudioResponse(success=False, error="session not found"))
            return
        if not stopped and (request.request_id or request.track_id is not None):
            target = f"request_id {request.request_id}" if request.request_id else f"track {request.track_id}"
            await stream.send_message(StopAudioResponse(success=False, error=f"nothing playing for {target}"))
            return
        await stream.send_message(StopAudioResponse(success=True, stopped_request_id=",".join(stopped)))

    async def health_check(self, stream: Stream[HealthCheckRequest, HealthCheckResponse]) -> None:
        await self._request(stream)
        state = self._state
        status = (
            HealthCheckResponseServingStatus.NOT_SERVING
            if self._registry.shutting_down or self._registry.draining
            else HealthCheckResponseServingStatus.SERVING
        )
        await stream.send_message(
            HealthCheckResponse(
                status=status,
                active_sessions=len(self._registry),
                active_streams=state.active_streams,
                uptime_seconds=int(time.monotonic() - state.started_monotonic),
                metadata=state.health_metadata(),
            )
        )

    async def get_status(self, stream: Stream[BridgeStatusRequest, BridgeStatusResponse]) -> None:
        request: BridgeStatusRequest = await self._request(stream)
        user_id = self._requests.user_id(request.user_id)
        session = self._registry.find(user_id)
        if session is None:  # ended (or never seen): what the last session left behind
            tombstone = self._registry.tombstone(user_id)
            if tombstone is None:
                raise grpc_error(SessionNotFoundError(user_id))
            reply = BridgeStatusResponse(
                connected=False, last_disconnect_at=tombstone.at_ms, last_disconnect_reason=tombstone.reason
            )
        elif session.closing:  # ending now: its own reason, not an older session's tombstone
            reply = BridgeStatusResponse(
                connected=False,
                last_disconnect_at=session.status.last_disconnect_at_ms or now_ms(),
                last_disconnect_reason=session.close_detail or "session closing",
            )
        else:
            status = session.status
            reply = BridgeStatusResponse(
                connected=status.connected,
                participant_id=session.room.participant_id,
                participant_count=session.room.participant_count,
                last_disconnect_at=status.last_disconnect_at_ms,
                last_disconnect_reason=status.last_disconnect_reason,
            )
        reply.server_version = VERSION
        await stream.send_message(reply)
