/**
 * The StreamAudio call of one session, kept open: when it ends without this client having ended it
 * (an error, or a clean end the bridge chose: LeaveRoom from elsewhere, a replacing JoinRoom, a
 * restart), it re-joins the room through `rejoin` and opens a new call, after a capped, jittered
 * backoff, until `close()`.
 *
 * Every call gets a generation number. Listeners of a call check it, so the end of a call this
 * stream has itself replaced or closed is ignored: without that, the end of our own superseded
 * stream would look like a failure, trigger a reconnect, which supersedes the new stream, and so on.
 * When a call is retired, its listeners are removed (except one no-op 'error' listener, so a late
 * CANCELLED cannot crash the process) and at most one retry timer exists at any time: nothing
 * accumulates across reconnects.
 */
import type { Metadata, StatusObject } from "@grpc/grpc-js";
import { Backoff } from "./backoff";
import type { AudioChunk } from "./generated/mentra/livekit/bridge/AudioChunk";
import type { AudioChunk__Output } from "./generated/mentra/livekit/bridge/AudioChunk";
import { describeError, type Logger, silentLogger } from "./logger";

/** Trailing metadata on StreamAudio calls the bridge ended with OK: why it ended them. */
export const END_REASON_KEY = "x-bridge-end-reason";
export const STREAM_SAMPLE_RATE = 16000;

/** The part of grpc-js's ClientDuplexStream this module uses (tests pass fakes). */
export interface AudioCall {
  write(chunk: AudioChunk): boolean;
  end(): void;
  cancel(): void;
  readonly writableLength: number;
  on(event: "data", listener: (chunk: AudioChunk__Output) => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  on(event: "status", listener: (status: StatusObject) => void): unknown;
  removeListener(event: "data", listener: (chunk: AudioChunk__Output) => void): unknown;
  removeListener(event: "error", listener: (err: Error) => void): unknown;
  removeListener(event: "status", listener: (status: StatusObject) => void): unknown;
}

/**
 * "unavailable": the bridge cannot be reached (BridgeAvailability); no re-join is tried until it
 * can, or the cooldown (`retryInMs`) has passed.
 */
export type AudioStreamState = "idle" | "open" | "reconnecting" | "unavailable" | "closed";

export interface StreamEnd {
  code: number;
  details: string;
  /** `x-bridge-end-reason` when the bridge ended the call cleanly. */
  endReason?: string;
}

export interface StateChange {
  state: AudioStreamState;
  /** How the previous call ended, on the change to "reconnecting". */
  end?: StreamEnd;
  /** Delay before the next attempt, on "reconnecting"; the longest the wait can last, on "unavailable". */
  retryInMs?: number;
  /** Why the last re-join failed, on "reconnecting" after a failed attempt. */
  error?: string;
  /** Failed attempts in a row so far. */
  attempts: number;
}

export interface StreamCounters {
  callsOpened: number;
  /** Calls opened again after an unexpected end. */
  reconnects: number;
  unexpectedEnds: number;
  failedRejoins: number;
  chunksIn: number;
  bytesIn: number;
  chunksOut: number;
  bytesOut: number;
  /** Chunks the caller sent while no call was open (they are not queued: stale audio is useless). */
  droppedWhileDown: number;
  /** Chunks refused because the call already had `maxPendingWrites` waiting (HTTP/2 backpressure). */
  droppedBackpressure: number;
  /**
   * Chunks refused because the bridge would reject them (an odd byte count is not s16le, a track id
   * must be a non-negative integer): the bridge ends the whole stream on such a chunk, which would
   * cost a re-join.
   */
  rejectedInvalid: number;
  /** Calls ended because another caller took the session over (not re-joined). */
  takeovers: number;
  /**
   * Make-before-break re-joins: a call answered NOT_FOUND for the session this client holds (behind
   * a proxy: the session's bridge is gone or the proxy sends the user elsewhere now), so the client
   * joined where the proxy sends it, then replaced the stream.
   */
  handovers: number;
}

export interface ReconnectingAudioStreamOptions {
  /** Starts a new StreamAudio call for `userId`'s session. */
  openCall: (userId: string) => AudioCall;
  /**
   * Re-joins the room with the current parameters; rejects when that fails. `isCurrent()` turns
   * false once the attempt is obsolete (close() or a newer open()), so it can give up early.
   */
  rejoin: (isCurrent: () => boolean) => Promise<void>;
  onAudio: (chunk: AudioChunk__Output) => void;
  /**
   * A notice the bridge sent on the call instead of audio (AudioChunk.notice; the client asks for
   * them in openCall's metadata): "draining" = join again elsewhere now, make-before-break.
   */
  onNotice?: (notice: string) => void;
  onStateChange?: (change: StateChange) => void;
  /** The session was taken over (see isTakeover): the stream is idle now and will not re-join. */
  onTakeover?: (end: StreamEnd) => void;
  backoff?: Backoff;
  logger?: Logger;
  /** A call that lived this long before ending resets the backoff. Default 5000 ms. */
  stableAfterMs?: number;
  /** Writes waiting in the call beyond which new chunks are dropped. Default 32 (about 3 s of 100 ms chunks). */
  maxPendingWrites?: number;
  now?: () => number;
}

/**
 * A clean end that says another caller took this user's session: a JoinRoom for the same user
 * replaced it, or a newer StreamAudio call for it superseded this one (the bridge's texts; see
 * `_end_for_close` and `serve_stream` in src/bridge/session.py). This client's own re-joins and
 * connect() calls retire the old call first, so such an end of the *current* call always comes
 * from someone else.
 */
export function isTakeover(end: StreamEnd): boolean {
  return (
    end.code === 0 &&
    end.endReason !== undefined &&
    (end.endReason.startsWith("session replaced") || end.endReason.startsWith("superseded by a newer StreamAudio call"))
  );
}

/** The bridge ended the call because it drains: UNAVAILABLE "bridge draining: join again ..." (see `hand_over`). */
export function isDrainEnd(end: StreamEnd): boolean {
  return end.code === 14 && /\bdraining\b/.test(end.details);
}

function ignoreError(): void {
  // A retired call may still report CANCELLED; nobody needs it, but an 'error' without a listener
  // would crash the process.
}

function endReason(metadata: Metadata | undefined): string | undefined {
  const value = metadata?.get(END_REASON_KEY)[0];
  if (value === undefined) {
    return undefined;
  }
  return typeof value === "string" ? value : value.toString("utf8");
}

interface ActiveCall {
  readonly call: AudioCall;
  readonly generation: number;
  readonly openedAt: number;
  readonly detach: () => void;
}

export class ReconnectingAudioStream {
  private readonly backoff: Backoff;
  private readonly logger: Logger;
  private readonly stableAfterMs: number;
  private readonly maxPendingWrites: number;
  private readonly now: () => number;
  private readonly stats: StreamCounters = {
    callsOpened: 0,
    reconnects: 0,
    unexpectedEnds: 0,
    failedRejoins: 0,
    chunksIn: 0,
    bytesIn: 0,
    chunksOut: 0,
    bytesOut: 0,
    droppedWhileDown: 0,
    droppedBackpressure: 0,
    rejectedInvalid: 0,
    takeovers: 0,
    handovers: 0,
  };
  private generation = 0;
  private active: ActiveCall | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private stateValue: AudioStreamState = "idle";
  /** Waiting for resume(): the bridge is unreachable. */
  private suspended = false;
  /**
   * A make-before-break re-join is under way (beginHandover): the current call stays open meanwhile,
   * and its end (the old bridge's session ended by LiveKit when the new one joined) is noted here
   * instead of starting a reconnect; open() then replaces the call.
   */
  private handover: { ended: StreamEnd | undefined } | undefined;
  private userId = "";

  constructor(private readonly options: ReconnectingAudioStreamOptions) {
    this.backoff = options.backoff ?? new Backoff();
    this.logger = options.logger ?? silentLogger;
    this.stableAfterMs = options.stableAfterMs ?? 5000;
    this.maxPendingWrites = options.maxPendingWrites ?? 32;
    this.now = options.now ?? Date.now;
  }

  get state(): AudioStreamState {
    return this.stateValue;
  }

  get counters(): Readonly<StreamCounters> {
    return { ...this.stats };
  }

  /** Whether a retry is scheduled (at most one ever is). */
  get retryPending(): boolean {
    return this.retryTimer !== undefined;
  }

  /** The call in use, for diagnostics and tests. */
  get currentCall(): AudioCall | undefined {
    return this.active?.call;
  }

  /** Opens the stream for `userId`, whose session the caller has just joined; replaces any open call. */
  open(userId: string): void {
    if (this.stateValue === "closed") {
      throw new Error("the audio stream is disposed");
    }
    this.stop();
    this.suspended = false;
    this.handover = undefined;
    this.userId = userId;
    this.backoff.reset();
    this.startCall();
  }

  /**
   * The bridge is unreachable: retires the call and any retry, and waits for resume() instead of
   * re-joining (state "unavailable"). Does nothing to a stream that is idle or closed.
   */
  suspend(retryInMs: number, error: string): void {
    if (this.stateValue === "idle" || this.stateValue === "closed") {
      return;
    }
    this.stop();
    this.handover = undefined;
    this.suspended = true;
    this.setState({ state: "unavailable", retryInMs, error, attempts: this.backoff.attempts });
  }

  /** The bridge is reachable again: re-join now (after the first, short backoff step). */
  resume(): void {
    if (!this.suspended) {
      return;
    }
    this.suspended = false;
    this.backoff.reset();
    this.scheduleRetry(undefined, undefined);
  }

  /**
   * The caller starts re-joining while this stream's call is still open (make-before-break: the
   * session moved to another bridge). Until open() or abortHandover(), the end of the current call
   * does not start a reconnect.
   */
  beginHandover(): void {
    this.handover = { ended: undefined };
    this.stats.handovers += 1;
  }

  /** The handover's re-join failed: if the old call ended meanwhile, reconnect as usual; else keep it. */
  abortHandover(error: string): void {
    const handover = this.handover;
    this.handover = undefined;
    if (handover?.ended !== undefined && this.active === undefined && this.stateValue === "reconnecting") {
      this.scheduleRetry(handover.ended, error);
    }
  }

  /** Ends the call (the caller then leaves the room) and stops reconnecting. The stream can be opened again. */
  close(): void {
    this.suspended = false;
    this.handover = undefined;
    this.stop();
    if (this.stateValue !== "closed" && this.stateValue !== "idle") {
      this.setState({ state: "idle", attempts: 0 });
    }
  }

  /** close(), for good. */
  dispose(): void {
    this.suspended = false;
    this.handover = undefined;
    this.stop();
    if (this.stateValue !== "closed") {
      this.setState({ state: "closed", attempts: 0 });
    }
  }

  /**
   * Sends PCM (16 kHz mono s16le) for track `trackId`. Returns false, counting the chunk, when it
   * was dropped: it is not whole samples, no call is open (reconnecting), or too many writes are
   * already waiting.
   */
  write(pcm: Uint8Array, trackId?: number): boolean {
    if (pcm.length % 2 !== 0 || (trackId !== undefined && !(Number.isInteger(trackId) && trackId >= 0))) {
      this.stats.rejectedInvalid += 1;
      return false;
    }
    const active = this.active;
    if (active === undefined || this.stateValue !== "open") {
      this.stats.droppedWhileDown += 1;
      return false;
    }
    if (active.call.writableLength >= this.maxPendingWrites) {
      this.stats.droppedBackpressure += 1;
      return false;
    }
    const chunk: AudioChunk = {
      user_id: this.userId,
      pcm_data: Buffer.isBuffer(pcm) ? pcm : Buffer.from(pcm.buffer, pcm.byteOffset, pcm.length),
      sample_rate: STREAM_SAMPLE_RATE,
      channels: 1,
      timestamp_ms: Date.now(),
    };
    if (trackId !== undefined) {
      chunk.track_id = trackId;
    }
    active.call.write(chunk);
    this.stats.chunksOut += 1;
    this.stats.bytesOut += pcm.length;
    return true;
  }

  /** Retires the call and the retry timer; a pending rejoin sees a new generation and gives up. */
  private stop(): void {
    this.generation += 1;
    this.clearRetry();
    const active = this.active;
    this.active = undefined;
    if (active !== undefined) {
      active.detach();
      // end() first so the bridge sees a clean half-close; cancel() then frees the call at once.
      active.call.end();
      active.call.cancel();
    }
  }

  private startCall(): void {
    const generation = ++this.generation;
    const call = this.options.openCall(this.userId);
    const onData = (chunk: AudioChunk__Output): void => {
      if (generation !== this.generation) {
        return;
      }
      if (chunk.notice) {
        this.options.onNotice?.(chunk.notice);
        return;
      }
      this.stats.chunksIn += 1;
      this.stats.bytesIn += chunk.pcm_data.length;
      this.options.onAudio(chunk);
    };
    const onStatus = (status: StatusObject): void => {
      if (generation === this.generation) {
        this.callEnded(status);
      }
    };
    call.on("data", onData);
    call.on("error", ignoreError); // the outcome is read from 'status', which always follows
    call.on("status", onStatus);
    const detach = (): void => {
      call.removeListener("data", onData);
      call.removeListener("status", onStatus);
      // ignoreError stays: a cancelled call still emits 'error' once (see ignoreError).
    };
    this.active = { call, generation, openedAt: this.now(), detach };
    this.stats.callsOpened += 1;
    // The first message names the session; the bridge reads nothing else from it (WIRE-CONTRACT.md).
    call.write({
      user_id: this.userId,
      pcm_data: Buffer.alloc(0),
      sample_rate: STREAM_SAMPLE_RATE,
      channels: 1,
      timestamp_ms: Date.now(),
    });
    this.setState({ state: "open", attempts: this.backoff.attempts });
  }

  /** The current call ended without this client ending it: retire it, then reconnect. */
  private callEnded(status: StatusObject): void {
    const active = this.active;
    if (active === undefined) {
      return;
    }
    this.active = undefined;
    active.detach();
    active.call.end();
    this.stats.unexpectedEnds += 1;
    const end: StreamEnd = { code: status.code, details: status.details };
    const reason = endReason(status.metadata);
    if (reason !== undefined) {
      end.endReason = reason;
    }
    if (this.handover !== undefined) {
      // Our own re-join elsewhere ended it (LiveKit let the new participant replace the old one):
      // open() follows, or abortHandover() if the re-join fails.
      this.handover.ended = end;
      this.logger.info({ code: end.code, details: end.details }, "audio stream ended during a handover");
      this.setState({ state: "reconnecting", end, attempts: this.backoff.attempts });
      return;
    }
    if (isTakeover(end)) {
      // Re-joining would take the session back from whoever took it, who would do the same: a loop.
      this.stats.takeovers += 1;
      this.logger.warn({ endReason: end.endReason }, "audio stream ended: another JoinRoom or stream took this user's session; not re-joining");
      this.backoff.reset();
      this.setState({ state: "idle", end, attempts: 0 });
      this.options.onTakeover?.(end);
      return;
    }
    if (this.now() - active.openedAt >= this.stableAfterMs) {
      this.backoff.reset();
    }
    this.logger.warn({ code: end.code, details: end.details, endReason: end.endReason }, "audio stream ended; reconnecting");
    this.scheduleRetry(end, undefined);
  }

  private scheduleRetry(end: StreamEnd | undefined, error: string | undefined): void {
    this.clearRetry();
    const generation = this.generation;
    // A draining bridge asks for the re-join (its session is handed over and gone): no reason to
    // wait, and the first attempt counts for the backoff all the same. Every other end waits.
    const backoffDelay = this.backoff.next();
    const delay = end !== undefined && isDrainEnd(end) && this.backoff.attempts <= 1 ? 0 : backoffDelay;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.retry(generation);
    }, delay);
    const change: StateChange = { state: "reconnecting", retryInMs: delay, attempts: this.backoff.attempts };
    if (end !== undefined) {
      change.end = end;
    }
    if (error !== undefined) {
      change.error = error;
    }
    this.setState(change);
  }

  private async retry(generation: number): Promise<void> {
    const isCurrent = (): boolean => generation === this.generation;
    if (!isCurrent()) {
      return;
    }
    try {
      await this.options.rejoin(isCurrent);
    } catch (err) {
      if (isCurrent()) {
        this.stats.failedRejoins += 1;
        const error = describeError(err);
        this.logger.warn({ error, attempts: this.backoff.attempts }, "re-joining the room failed; will retry");
        this.scheduleRetry(undefined, error);
      }
      return;
    }
    if (!isCurrent()) {
      return;
    }
    try {
      this.startCall();
    } catch (err) {
      // grpc-js throws at once when the channel is shut down: count it as a failed attempt.
      this.stats.failedRejoins += 1;
      this.scheduleRetry(undefined, describeError(err));
      return;
    }
    this.stats.reconnects += 1;
    this.logger.info({ reconnects: this.stats.reconnects }, "audio stream reconnected");
  }

  private clearRetry(): void {
    if (this.retryTimer !== undefined) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
  }

  private setState(change: StateChange): void {
    this.stateValue = change.state;
    try {
      this.options.onStateChange?.(change);
    } catch (err) {
      this.logger.error({ error: describeError(err) }, "onStateChange threw");
    }
  }
}
