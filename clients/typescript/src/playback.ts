/**
 * One PlayAudio call: its events, in order, to a typed callback, and a promise that resolves with
 * the terminal event. Exactly one terminal event (COMPLETED or FAILED) is ever reported per call:
 * when the call ends without one (a gRPC error, a dropped connection, a stream that just ends), the
 * client reports a FAILED event of its own carrying the gRPC status code.
 *
 * The promise never rejects: the old client's playAudio returned nothing and callers fire and
 * forget it, so a rejection nobody handles would crash the process (Node's default). Whether it
 * played is in the event's `type`.
 */
import { status as Status, type StatusObject } from "@grpc/grpc-js";
import { isTerminal, type PlayAudioEvent, type PlayAudioEventType, type RawPlayAudioEvent, toPlayAudioEvent } from "./events";
import type { LiveKitBridgeClient } from "./generated/mentra/livekit/bridge/LiveKitBridge";
import type { PlayAudioRequest } from "./generated/mentra/livekit/bridge/PlayAudioRequest";
import { describeError, type Logger } from "./logger";
import type { EnumNames } from "./proto";
import { routingMetadata } from "./routing";

export interface PlayAudioParams {
  requestId: string;
  /** http(s) URL of an MP3 or WAV file the bridge fetches. */
  url: string;
  /** Gain: 1 = unchanged (also when omitted), 0 = mute. Sent only when given (proto `optional`). */
  volume?: number | undefined;
  /** Stop what is playing first. */
  stopOther?: boolean | undefined;
  /** Track to play on: 0 speaker (default), 1 app_audio, 2 tts, n > 2 `track_n`. */
  trackId?: number | undefined;
}

export type PlayAudioListener = (event: PlayAudioEvent) => void;

export interface Playback {
  readonly requestId: string;
  /** Resolves with the COMPLETED or FAILED event; never rejects. */
  readonly done: Promise<PlayAudioEvent>;
  /** Cancels the call; `done` then resolves with a FAILED event (CANCELLED). */
  cancel(): void;
  /** Ends the playback with `event` (a FAILED event the client made), then cancels the call. */
  fail(event: PlayAudioEvent): void;
}

export interface PlaybackContext {
  stub: LiveKitBridgeClient;
  userId: string;
  eventTypes: EnumNames<PlayAudioEventType>;
  logger: Logger;
}

function ignoreError(): void {
  // The outcome is read from 'status'; this only keeps an 'error' event from going unhandled.
}

/** The request exactly as the wire contract wants it: optional fields only when the caller set them. */
export function playAudioRequest(userId: string, params: PlayAudioParams): PlayAudioRequest {
  const request: PlayAudioRequest = {
    request_id: params.requestId,
    audio_url: params.url,
    user_id: userId,
    stop_other: params.stopOther ?? false,
  };
  if (params.volume !== undefined) {
    request.volume = params.volume;
  }
  if (params.trackId !== undefined) {
    request.track_id = params.trackId;
  }
  return request;
}

/** A FAILED event made by the client for a call that ended without a terminal event. */
export function failedEvent(requestId: string, error: string, grpcCode: number, code?: string): PlayAudioEvent {
  return { type: "FAILED", requestId, durationMs: 0, positionMs: 0, error, metadata: code === undefined ? {} : { code }, grpcCode };
}

function statusError(status: StatusObject): string {
  if (status.code === Status.OK) {
    return "PlayAudio ended without a COMPLETED or FAILED event";
  }
  return `PlayAudio failed: ${Status[status.code] ?? status.code}: ${status.details}`;
}

export function startPlayback(context: PlaybackContext, params: PlayAudioParams, onEvent?: PlayAudioListener): Playback {
  const { requestId } = params;
  const { logger } = context;
  // waitForReady: right after a bridge restart the call waits for the channel's reconnect (< 1 s)
  // instead of failing; a bridge that stays away is handled by BridgeAvailability, which fails it.
  // x-user-id: a proxy in front of a pool routes the call to the bridge holding the session.
  const call = context.stub.playAudio(playAudioRequest(context.userId, params), routingMetadata(context.userId, true));
  let resolveDone: (event: PlayAudioEvent) => void = () => undefined;
  const done = new Promise<PlayAudioEvent>((resolve) => {
    resolveDone = resolve;
  });
  let settled = false;

  const report = (event: PlayAudioEvent): void => {
    try {
      onEvent?.(event);
    } catch (err) {
      logger.error({ requestId, error: describeError(err) }, "PlayAudio event callback threw");
    }
  };
  const settle = (event: PlayAudioEvent): void => {
    settled = true;
    call.removeListener("data", onData);
    call.removeListener("status", onStatus);
    report(event);
    resolveDone(event);
  };
  const onData = (raw: RawPlayAudioEvent): void => {
    if (settled) {
      return;
    }
    const event = toPlayAudioEvent(raw, context.eventTypes, requestId);
    if (event === undefined) {
      logger.warn({ requestId, type: String(raw.type) }, "ignoring a PlayAudio event of unknown type");
      return;
    }
    if (isTerminal(event.type)) {
      settle(event);
    } else {
      report(event);
    }
  };
  const onStatus = (status: StatusObject): void => {
    if (!settled) {
      settle(failedEvent(requestId, statusError(status), status.code));
    }
  };
  call.on("data", onData);
  call.on("error", ignoreError);
  call.on("status", onStatus);
  return {
    requestId,
    done,
    cancel: () => call.cancel(),
    fail: (event) => {
      if (!settled) {
        settle(event);
      }
      call.cancel();
    },
  };
}
