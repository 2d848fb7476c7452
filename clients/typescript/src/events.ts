/**
 * PlayAudio events as the cloud sees them: camelCase, numbers for int64, and an event type that is
 * right whatever enum/long options the proto was loaded with.
 */
import type * as protoLoader from "@grpc/proto-loader";
import {
  _mentra_livekit_bridge_PlayAudioEvent_EventType as GENERATED_EVENT_TYPES,
  type PlayAudioEvent__Output,
} from "./generated/mentra/livekit/bridge/PlayAudioEvent";
import { checkedEnumNames, type EnumNames } from "./proto";

export type PlayAudioEventType = PlayAudioEvent__Output["type"];

export interface PlayAudioEvent {
  type: PlayAudioEventType;
  requestId: string;
  /**
   * Length of the audio in ms. Final on COMPLETED; before that, this bridge reports the audio it has
   * decoded so far (it decodes while downloading), so do not compute progress as position/duration.
   */
  durationMs: number;
  /** Audio played so far, in ms. */
  positionMs: number;
  /** Why playback failed (FAILED events), when the bridge or the client gives a reason. */
  error?: string;
  metadata: Record<string, string>;
  /**
   * Set on a FAILED event the client made itself because the call ended without one (a gRPC error
   * such as UNAVAILABLE or UNIMPLEMENTED, or a stream that ended early): the gRPC status code.
   */
  grpcCode?: number;
}

/** The wire object, typed loosely: its field types depend on the loader's options. */
export interface RawPlayAudioEvent {
  type?: unknown;
  request_id?: unknown;
  duration_ms?: unknown;
  position_ms?: unknown;
  error?: unknown;
  metadata?: unknown;
}

/** The EventType table of the loaded proto (see checkedEnumNames). */
export function playAudioEventTypes(definition: protoLoader.PackageDefinition): EnumNames<PlayAudioEventType> {
  return checkedEnumNames(definition, "PlayAudioEvent", "EventType", GENERATED_EVENT_TYPES);
}

export function isTerminal(type: PlayAudioEventType): boolean {
  return type === "COMPLETED" || type === "FAILED";
}

interface LongLike {
  toNumber(): number;
}

function isLongLike(value: unknown): value is LongLike {
  return typeof value === "object" && value !== null && typeof (value as Partial<LongLike>).toNumber === "function";
}

/**
 * An int64 as a JS number, from any of the shapes loaders produce: a decimal string (`longs: String`),
 * a number, a bigint, or a Long object (the loader's default). Durations and epoch milliseconds are
 * far below 2^53, so no precision is lost. Anything else (absent, garbage) reads as 0, the proto default.
 */
export function int64ToNumber(value: unknown): number {
  let result: number;
  if (typeof value === "number") {
    result = value;
  } else if (typeof value === "string" || typeof value === "bigint") {
    result = Number(value);
  } else if (isLongLike(value)) {
    result = value.toNumber();
  } else {
    result = 0;
  }
  return Number.isFinite(result) ? result : 0;
}

function stringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof value === "object" && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      if (typeof item === "string") {
        out[key] = item;
      }
    }
  }
  return out;
}

/**
 * The cloud-facing event for a wire event, or `undefined` when its type is not one the proto
 * defines (a newer bridge's event kind): such an event is ignored, never mistaken for FAILED.
 */
export function toPlayAudioEvent(
  raw: RawPlayAudioEvent,
  types: EnumNames<PlayAudioEventType>,
  fallbackRequestId: string,
): PlayAudioEvent | undefined {
  const type = types.nameOf(raw.type);
  if (type === undefined) {
    return undefined;
  }
  const event: PlayAudioEvent = {
    type,
    requestId: typeof raw.request_id === "string" && raw.request_id !== "" ? raw.request_id : fallbackRequestId,
    durationMs: int64ToNumber(raw.duration_ms),
    positionMs: int64ToNumber(raw.position_ms),
    metadata: stringMap(raw.metadata),
  };
  if (typeof raw.error === "string" && raw.error !== "") {
    event.error = raw.error;
  }
  return event;
}
