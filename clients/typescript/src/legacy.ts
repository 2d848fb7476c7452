/**
 * What the cloud's existing callers need from LiveKitGrpcClient beyond the options API: the shape of
 * the `UserSession` the old constructor took, the snake_case status the old `getStatus()` resolved
 * with, and the JSON-style events the old `onEvent()` handlers expect (the WebSocket bridge's
 * `play_started` / `play_complete`). The class itself is one (client.ts); this module only holds
 * the types and conversions.
 */
import type { PlayAudioEvent } from "./events";
import type { Logger } from "./logger";

/** The logger of a UserSession: pino's, whose child() the old client called. */
export interface SessionLogger extends Logger {
  child?(bindings: Record<string, unknown>): Logger;
}

/**
 * What the old constructor read from the cloud's `UserSession`: the user id, the logger, and the
 * audio manager room audio goes to. Structural, so the cloud's class fits as it is.
 */
export interface UserSessionLike {
  readonly userId: string;
  readonly logger: SessionLogger;
  /** Read when audio arrives, not at construction (the session may set it up later). */
  readonly audioManager: {
    // Method syntax: the cloud's `processAudioData(audioData: ArrayBuffer | any, source?)` fits.
    processAudioData(pcm: Buffer): unknown;
  };
}

export function isUserSessionLike(value: unknown): value is UserSessionLike {
  if (typeof value !== "object" || value === null) {
    return false;
  }
  const candidate = value as Partial<Record<keyof UserSessionLike, unknown>>;
  return typeof candidate.userId === "string" && typeof candidate.audioManager === "object" && candidate.audioManager !== null;
}

/**
 * The old client's getStatus() result (the bridge's BridgeStatusResponse as the loader gave it).
 * `getStatus()` returns these fields beside the camelCase ones.
 */
export interface LegacyBridgeStatus {
  connected: boolean;
  participant_id: string;
  participant_count: number;
  last_disconnect_at: number;
  last_disconnect_reason: string;
  server_version: string;
}

/** Events for `onEvent()` handlers, in the format of the WebSocket bridge the cloud's SpeakerManager was written for. */
export type LegacyBridgeEvent =
  | { type: "play_started"; requestId: string; url: string }
  | {
      type: "play_complete";
      requestId: string;
      success: boolean;
      durationMs: number;
      positionMs: number;
      error?: string;
      code?: string;
    };

/** STARTED → play_started, COMPLETED/FAILED → play_complete; PROGRESS has no old counterpart. */
export function toLegacyEvent(event: PlayAudioEvent, url: string): LegacyBridgeEvent | undefined {
  switch (event.type) {
    case "STARTED":
      return { type: "play_started", requestId: event.requestId, url };
    case "COMPLETED":
    case "FAILED": {
      const out: LegacyBridgeEvent = {
        type: "play_complete",
        requestId: event.requestId,
        success: event.type === "COMPLETED",
        durationMs: event.durationMs,
        positionMs: event.positionMs,
      };
      if (event.error !== undefined) {
        out.error = event.error;
      }
      const code = event.metadata["code"];
      if (code !== undefined) {
        out.code = code;
      }
      return out;
    }
    default:
      return undefined;
  }
}

/** What the old getStatus() resolved with when it could not ask the bridge (it never rejected). */
export function legacyStatusFallback(reason: string): LegacyBridgeStatus {
  return {
    connected: false,
    participant_id: "",
    participant_count: 0,
    last_disconnect_at: 0,
    last_disconnect_reason: reason,
    server_version: "",
  };
}
