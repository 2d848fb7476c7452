/**
 * LiveKitGrpcClient: one user session on the bridge, with the API the cloud already calls.
 *
 *   connect()        JoinRoom, then a StreamAudio call kept open by ReconnectingAudioStream
 *   sendAudioChunk() PCM to the room on a track
 *   playAudio()      server-side playback with typed events and a promise of the terminal event
 *   stopAudio()      stop by request id, by track, or everything
 *   getStatus()      the bridge's view of the session, plus the stream's
 *   disconnect()     stop streaming and LeaveRoom; connect() may be called again
 *   dispose()        disconnect for good; idempotent
 *
 * Room audio reaches `onAudio` through an AudioPacer (`pacing`; pass-through by default, which is
 * what the old client did).
 */
import * as grpc from "@grpc/grpc-js";
import { Backoff, type BackoffOptions } from "./backoff";
import type { AvailabilityChange } from "./availability";
import { type BridgeChannel, type ChannelLease, defaultBridgeAddress, sharedBridgeChannel } from "./channel";
import { int64ToNumber, type PlayAudioEvent } from "./events";
import type { JoinRoomRequest } from "./generated/mentra/livekit/bridge/JoinRoomRequest";
import type { LeaveRoomResponse__Output } from "./generated/mentra/livekit/bridge/LeaveRoomResponse";
import type { StopAudioRequest } from "./generated/mentra/livekit/bridge/StopAudioRequest";
import type { StopAudioResponse__Output } from "./generated/mentra/livekit/bridge/StopAudioResponse";
import {
  isUserSessionLike,
  type LegacyBridgeEvent,
  type LegacyBridgeStatus,
  legacyStatusFallback,
  toLegacyEvent,
  type UserSessionLike,
} from "./legacy";
import { describeError, type Logger, silentLogger } from "./logger";
import { AudioPacer, type AudioPacerOptions } from "./pacer";
import { failedEvent, type Playback, type PlayAudioListener, type PlayAudioParams, startPlayback } from "./playback";
import { routingMetadata, streamMetadata } from "./routing";
import { SerialQueue } from "./serial";
import { type AudioStreamState, ReconnectingAudioStream, type StateChange, type StreamCounters } from "./stream";

export interface ConnectParams {
  /**
   * The user whose session this is. Default: the client's user (`options.userId`, or the
   * `userSession.userId` of the old constructor); one of them is needed.
   */
  userId?: string | undefined;
  roomName: string;
  /** LiveKit JWT for the bridge's participant. Never logged. */
  token: string;
  /** LiveKit server URL; empty = the bridge's LIVEKIT_URL. */
  url: string;
  /** Identity whose audio is forwarded. Default: userId (the phone joins with the user id as identity). */
  targetIdentity?: string | undefined;
}

/** ConnectParams once the user is known. */
interface SessionParams extends ConnectParams {
  userId: string;
}

export interface JoinResult {
  participantId: string;
  participantCount: number;
  metadata: Record<string, string>;
}

export interface StopAudioParams {
  /** Stop this playback; else the playback on `trackId`; else everything. */
  requestId?: string | undefined;
  trackId?: number | undefined;
  reason?: string | undefined;
}

export interface StopAudioResult {
  success: boolean;
  error?: string;
  stoppedRequestId?: string;
  /** The gRPC status code when the call itself failed. */
  grpcCode?: number;
}

/**
 * The session as the bridge sees it, plus this client's stream. The snake_case fields of the old
 * client's result (LegacyBridgeStatus) are there too, with the same values.
 */
export interface SessionStatus extends LegacyBridgeStatus {
  /** The bridge's session is in its room. */
  connected: boolean;
  participantId: string;
  participantCount: number;
  /** ms since the epoch; 0 = never. */
  lastDisconnectAt: number;
  lastDisconnectReason: string;
  serverVersion: string;
  /** This client's audio stream. */
  stream: AudioStreamState;
  counters: StreamCounters;
  /** Why the bridge could not be asked (old-style clients only: they resolve instead of rejecting). */
  error?: string;
  grpcCode?: number;
}

export interface ReconnectOptions extends BackoffOptions {
  /** A stream that lived this long before ending starts the backoff from the beginning. Default 5000 ms. */
  stableAfterMs?: number;
}

export interface LiveKitGrpcClientOptions {
  /** The user of this client's session, so connect() need not name it. */
  userId?: string;
  /** Default: the process-wide channel to `address` (sharedBridgeChannel). */
  channel?: BridgeChannel;
  /** Used only without `channel`. Default: LIVEKIT_GRPC_SOCKET / LIVEKIT_GRPC_BRIDGE_URL / livekit-bridge:9090. */
  address?: string;
  /** Room audio: 16 kHz mono s16le, shaped by `pacing`. */
  onAudio?: (pcm: Buffer) => void;
  /** Default `{ mode: "passthrough" }`; `{ mode: "paced" }` for steady 100 ms frames. */
  pacing?: AudioPacerOptions;
  /** Stream state changes: "open", "reconnecting" (with the reason and delay), "idle", "closed". */
  onStateChange?: (change: StateChange) => void;
  reconnect?: ReconnectOptions;
  /** Deadline of a JoinRoom call. Default 20000 ms (the bridge itself gives up after 10 s). */
  joinTimeoutMs?: number;
  /** Deadline of LeaveRoom, StopAudio and GetStatus. Default 5000 ms. */
  callTimeoutMs?: number;
  /** Outgoing chunks allowed to wait for HTTP/2 flow control before new ones are dropped. Default 32. */
  maxPendingWrites?: number;
  /** A pino logger fits. Default: silent. */
  logger?: Logger;
}

/** JoinRoom failed: `success=false` from the bridge (`grpcCode` undefined) or a gRPC error. */
export class JoinRoomError extends Error {
  override readonly name = "JoinRoomError";
  constructor(
    message: string,
    readonly grpcCode?: number,
  ) {
    super(message);
  }
}

export class ClientDisposedError extends Error {
  override readonly name = "ClientDisposedError";
  constructor() {
    super("LiveKitGrpcClient is disposed");
  }
}

function grpcMessage(err: grpc.ServiceError): string {
  return `${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`;
}

/** The old constructor's address rule: LIVEKIT_GRPC_SOCKET wins, then the `bridgeUrl` argument, then the defaults. */
function legacyAddress(bridgeUrl: string | undefined): string {
  const socket = process.env["LIVEKIT_GRPC_SOCKET"];
  if (socket) {
    return `unix:${socket}`;
  }
  return bridgeUrl || defaultBridgeAddress();
}

function sameParams(a: SessionParams, b: SessionParams): boolean {
  return (
    a.userId === b.userId &&
    a.roomName === b.roomName &&
    a.token === b.token &&
    a.url === b.url &&
    (a.targetIdentity || a.userId) === (b.targetIdentity || b.userId)
  );
}

/** JoinRoom attempts when a bridge refuses because it is full or draining (see join()). */
const JOIN_ATTEMPTS = 10;
const JOIN_RETRY_MS = 100;

/** Clients dropped without dispose(): their channel lease and availability listener are released. */
const abandoned = new FinalizationRegistry<() => void>((release) => release());

export class LiveKitGrpcClient {
  private readonly channel: BridgeChannel;
  /** This session's connection within the shared channel. */
  private readonly lease: ChannelLease;
  private readonly logger: Logger;
  private readonly joinTimeoutMs: number;
  private readonly callTimeoutMs: number;
  private readonly pacer: AudioPacer;
  private readonly stream: ReconnectingAudioStream;
  private readonly serial = new SerialQueue();
  private readonly playbacks = new Set<Playback>();
  /** The user connect() uses when its parameters name none. */
  private readonly defaultUserId: string | undefined;
  /** Constructed the old way (with a UserSession): getStatus() resolves instead of rejecting, as it did. */
  private readonly legacy: boolean;
  /** Handlers of onPlayAudioEvent(requestId, handler), until their playback ends. */
  private readonly playAudioHandlers = new Map<string, (event: PlayAudioEvent) => void>();
  /** The handler of onEvent(), which gets the old JSON-style events. */
  private legacyEventHandler: ((event: LegacyBridgeEvent) => void) | undefined;
  /** The parameters of the room this client wants to be in; undefined when it wants none. */
  private params: SessionParams | undefined;
  /** The user whose session exists on the bridge (joined, not yet left). */
  private joinedUserId: string | undefined;
  private rejoinCall: grpc.ClientUnaryCall | undefined;
  /** Every JoinRoom under way (they wait for the channel; they are cancelled when the bridge turns out unreachable). */
  private readonly joinCalls = new Set<grpc.ClientUnaryCall>();
  private readonly stopWatchingAvailability: () => void;
  /** connect() calls under way, and the latest one (a duplicate of it shares its promise). */
  private connectsInFlight = 0;
  private pendingConnect: { params: SessionParams; promise: Promise<JoinResult> } | undefined;
  /** The make-before-break re-join under way (see moved()). */
  private moving: Promise<boolean> | undefined;
  private disposing: Promise<void> | undefined;

  /** The options API: see LiveKitGrpcClientOptions. */
  constructor(options?: LiveKitGrpcClientOptions);
  /**
   * The old constructor: the user id, logger and audio sink come from the cloud's UserSession
   * (room audio goes to `userSession.audioManager.processAudioData`); `bridgeUrl` is the bridge's
   * address unless LIVEKIT_GRPC_SOCKET is set (as before).
   */
  constructor(userSession: UserSessionLike, bridgeUrl?: string);
  constructor(first: LiveKitGrpcClientOptions | UserSessionLike = {}, bridgeUrl?: string) {
    let options: LiveKitGrpcClientOptions;
    if (isUserSessionLike(first)) {
      const session = first;
      const logger =
        typeof session.logger.child === "function"
          ? session.logger.child({ service: "LiveKitGrpcClient", feature: "livekit-grpc" })
          : session.logger;
      options = {
        userId: session.userId,
        address: legacyAddress(bridgeUrl),
        logger,
        onAudio: (pcm) => {
          // Read at delivery time; a promise (the cloud's processAudioData is async) must not reject unhandled.
          const result: unknown = session.audioManager.processAudioData(pcm);
          if (result instanceof Promise) {
            result.catch((err: unknown) => logger.warn({ error: describeError(err) }, "processAudioData failed"));
          }
        },
      };
      this.legacy = true;
    } else {
      options = first;
      this.legacy = false;
    }
    this.defaultUserId = options.userId;
    this.channel = options.channel ?? sharedBridgeChannel(options.address);
    this.lease = this.channel.acquire();
    this.logger = options.logger ?? silentLogger;
    this.joinTimeoutMs = options.joinTimeoutMs ?? 20_000;
    this.callTimeoutMs = options.callTimeoutMs ?? 5_000;
    const onAudio = options.onAudio;
    this.pacer = new AudioPacer((pcm) => onAudio?.(pcm), {
      mode: "passthrough",
      ...options.pacing,
      onError: (err) => this.logger.error({ error: describeError(err) }, "onAudio threw"),
    });
    const reconnect = options.reconnect ?? {};
    const streamOptions = {
      openCall: (userId: string) => this.lease.stub.streamAudio(streamMetadata(userId)),
      rejoin: (isCurrent: () => boolean) => this.backgroundRejoin(isCurrent),
      onAudio: (chunk: { pcm_data: Buffer }) => this.pacer.push(chunk.pcm_data),
      // The bridge is draining (a rolling restart): move now, while its stream still delivers.
      onNotice: (notice: string) => {
        const userId = this.params?.userId;
        if (notice === "draining" && userId !== undefined) {
          void this.moved(userId, "draining notice");
        }
      },
      // Someone else joined as this user: the session is theirs now; forget it (a later
      // disconnect() must not LeaveRoom their session).
      onTakeover: () => {
        this.params = undefined;
        this.joinedUserId = undefined;
      },
      backoff: new Backoff(reconnect),
      logger: this.logger,
      ...(options.onStateChange === undefined ? {} : { onStateChange: options.onStateChange }),
      ...(reconnect.stableAfterMs === undefined ? {} : { stableAfterMs: reconnect.stableAfterMs }),
      ...(options.maxPendingWrites === undefined ? {} : { maxPendingWrites: options.maxPendingWrites }),
    };
    this.stream = new ReconnectingAudioStream(streamOptions);
    this.stopWatchingAvailability = LiveKitGrpcClient.watchAvailability(this, this.channel, this.lease);
  }

  /**
   * Subscribes `client` to the channel's availability through a weak reference, and gives its place
   * on the channel back when it is garbage-collected without dispose(): the cloud's LiveKitManager
   * replaces a client that is not connected by a new one without disposing it, and the channel (shared
   * by the process) must not keep such clients alive. Static, so its closures cannot capture the
   * instance.
   */
  private static watchAvailability(client: LiveKitGrpcClient, channel: BridgeChannel, lease: ChannelLease): () => void {
    const ref = new WeakRef(client);
    const stop = channel.availability.onChange((change) => ref.deref()?.availabilityChanged(change));
    abandoned.register(
      client,
      () => {
        stop();
        lease.release();
      },
      lease,
    );
    return () => {
      abandoned.unregister(lease);
      stop();
    };
  }

  /** The user of the current (or last) connect(), else the client's own user. */
  get userId(): string | undefined {
    return this.params?.userId ?? this.joinedUserId ?? this.defaultUserId;
  }

  get disposed(): boolean {
    return this.disposing !== undefined;
  }

  /** True while the audio stream is open (not while it reconnects). */
  isConnected(): boolean {
    return this.stream.state === "open";
  }

  /**
   * True while the client is on its way into a room: a connect() or rejoin() under way, or the
   * stream re-joining in the background or waiting for an unreachable bridge to come back. (The
   * old client: only while connect() ran. Callers that
   * create a new client when `!isConnected() && !isConnecting()` therefore leave a reconnecting
   * one alone instead of starting a second session for the same user.)
   */
  isConnecting(): boolean {
    const state = this.stream.state;
    return !this.disposed && (this.connectsInFlight > 0 || (this.params !== undefined && (state === "reconnecting" || state === "unavailable")));
  }

  /** False while the bridge is unreachable and calls fail fast (see BridgeAvailability). */
  get bridgeAvailable(): boolean {
    return this.channel.availability.available;
  }

  /** Pacer counters (drops, underruns, ...) of the room audio delivered to onAudio. */
  get pacerCounters(): AudioPacer["counters"] {
    return this.pacer.counters;
  }

  get streamCounters(): Readonly<StreamCounters> {
    return this.stream.counters;
  }

  /**
   * Joins the room and opens the audio stream. Rejects with JoinRoomError when the bridge cannot
   * join (its `error` text) or the call fails. Calling it again re-joins with the new parameters;
   * a call with the same parameters as one still under way shares its result.
   */
  connect(params: ConnectParams): Promise<JoinResult> {
    let session: SessionParams;
    try {
      this.assertUsable();
      session = this.sessionParams(params);
      this.assertAvailable();
    } catch (err) {
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- passes on what the checks above threw (their own Errors)
      return Promise.reject(err);
    }
    const pending = this.pendingConnect;
    if (pending !== undefined && sameParams(pending.params, session)) {
      return pending.promise;
    }
    this.cancelRejoin();
    this.connectsInFlight += 1;
    const promise = this.serial
      .run(async () => {
        this.assertUsable();
        this.assertAvailable();
        this.stream.close();
        if (this.joinedUserId !== undefined && this.joinedUserId !== session.userId) {
          await this.leave(this.joinedUserId, "switching user");
        }
        this.params = session;
        try {
          const result = await this.join(session, undefined);
          this.assertUsable();
          this.stream.open(session.userId);
          this.logger.info(
            { userId: session.userId, room: session.roomName, participantCount: result.participantCount },
            "joined LiveKit room via the bridge",
          );
          return result;
        } catch (err) {
          this.params = undefined;
          throw err;
        }
      })
      .finally(() => {
        this.connectsInFlight -= 1;
        if (this.pendingConnect?.promise === promise) {
          this.pendingConnect = undefined;
        }
      });
    this.pendingConnect = { params: session, promise };
    return promise;
  }

  /**
   * Joins again, with new parameters (a fresh token) or the current ones: what the cloud's manager
   * calls after the bridge lost the room. Rejects like connect(), or when there is nothing to re-join.
   */
  rejoin(params?: ConnectParams): Promise<JoinResult> {
    const target = params ?? this.params;
    if (target === undefined) {
      return Promise.reject(new Error("rejoin called without params and no previous room params"));
    }
    return this.connect(target);
  }

  /**
   * Sends PCM (16 kHz mono s16le) to the room on `trackId` (0 speaker, 1 app_audio, 2 tts, n > 2
   * `track_n`). Returns false when the chunk was dropped (not whole samples, not connected,
   * reconnecting, or the bridge is not keeping up); audio is never queued for later, since late
   * audio is worse than none. Counters: `streamCounters`.
   */
  sendAudioChunk(pcm: Uint8Array, trackId?: number): boolean {
    return this.stream.write(pcm, trackId);
  }

  /**
   * Plays an audio URL into the room. `onEvent` gets STARTED, PROGRESS..., then exactly one
   * COMPLETED or FAILED; the promise resolves with that last event and never rejects. The events
   * also go to a handler registered with onPlayAudioEvent(requestId), and (as play_started /
   * play_complete) to the onEvent() handler.
   */
  playAudio(params: PlayAudioParams, onEvent?: PlayAudioListener): Promise<PlayAudioEvent> {
    const listener = this.fanOut(params, onEvent);
    const userId = this.params?.userId;
    if (this.disposed || userId === undefined) {
      const reason = this.disposed ? "client disposed" : "not connected";
      return this.failLocally(params.requestId, reason, grpc.status.FAILED_PRECONDITION, listener);
    }
    if (!this.channel.availability.available) {
      const event = this.unavailableEvent(params.requestId);
      listener(event);
      return Promise.resolve(event);
    }
    return this.startPlayAudio(userId, params, listener, true);
  }

  /**
   * One PlayAudio call. With `mayRetry`, a NOT_FOUND before any event (the session is not on the
   * bridge the proxy sent the call to: it moved) is not reported: the client re-joins, then plays
   * once more, and reports that attempt's events.
   */
  private startPlayAudio(userId: string, params: PlayAudioParams, listener: PlayAudioListener, mayRetry: boolean): Promise<PlayAudioEvent> {
    const context = { stub: this.lease.stub, userId, eventTypes: this.channel.eventTypes, logger: this.logger };
    let delivered = false;
    const isMove = (event: PlayAudioEvent): boolean =>
      mayRetry && !delivered && event.type === "FAILED" && event.grpcCode === grpc.status.NOT_FOUND && this.joinedUserId === userId;
    const attemptListener: PlayAudioListener = (event) => {
      if (isMove(event)) {
        return; // held back: moved() decides whether it is reported
      }
      delivered = true;
      listener(event);
    };
    let playback: Playback;
    try {
      playback = startPlayback(context, params, attemptListener);
    } catch (err) {
      // grpc-js throws at once on a closed channel; the promise still only resolves.
      return this.failLocally(params.requestId, `PlayAudio failed: ${describeError(err)}`, grpc.status.UNAVAILABLE, listener);
    }
    this.playbacks.add(playback);
    return playback.done.then(async (event) => {
      this.playbacks.delete(playback);
      if (!isMove(event)) {
        return event;
      }
      if (!this.disposed && (await this.moved(userId, "PlayAudio"))) {
        return this.startPlayAudio(userId, params, listener, false);
      }
      listener(event);
      return event;
    });
  }

  /** The old name of playAudio(). */
  playUrl(params: PlayAudioParams): Promise<PlayAudioEvent> {
    return this.playAudio(params);
  }

  /**
   * The old way to follow a playback: `handler` gets the events of the playback `requestId`
   * (started before or after this call) until its COMPLETED or FAILED, then is removed.
   */
  onPlayAudioEvent(requestId: string, handler: (event: PlayAudioEvent) => void): void {
    this.playAudioHandlers.set(requestId, handler);
  }

  /**
   * The old way to hear about every playback: `handler` (one; a new call replaces it) gets
   * `{type: "play_started", requestId, url}` and `{type: "play_complete", requestId, success,
   * durationMs, positionMs, error?, code?}`, the events of the WebSocket bridge the cloud's
   * SpeakerManager was written for. (The previous gRPC client accepted the handler and never called it.)
   */
  onEvent(handler: (event: LegacyBridgeEvent) => void): void {
    this.legacyEventHandler = handler;
  }

  /**
   * Kept for the old callers; does nothing, as in the previous gRPC client: which participant's
   * audio is forwarded is set at JoinRoom (`targetIdentity`).
   */
  enableSubscribe(targetIdentity?: string): void {
    this.logger.debug({ targetIdentity }, "enableSubscribe: no-op (the target identity is set at JoinRoom)");
  }

  /** Kept for the old callers; does nothing (see enableSubscribe). */
  disableSubscribe(): void {
    this.logger.debug({}, "disableSubscribe: no-op");
  }

  /**
   * Stops playback: `requestId`, else the playback on `trackId`, else all of this user's. A plain
   * string is taken as the request id (the old client's signature). Never rejects: a failed call
   * resolves with success=false and its gRPC code.
   */
  stopAudio(target: StopAudioParams | string = {}): Promise<StopAudioResult> {
    const params: StopAudioParams = typeof target === "string" ? { requestId: target } : target;
    const userId = this.params?.userId;
    if (userId === undefined) {
      return Promise.resolve({ success: false, error: "not connected" });
    }
    if (!this.channel.availability.available) {
      return Promise.resolve({ success: false, error: this.channel.availability.error().message, grpcCode: grpc.status.UNAVAILABLE });
    }
    const request: StopAudioRequest = {
      user_id: userId,
      request_id: params.requestId ?? "",
      reason: params.reason ?? "stopAudio",
    };
    if (params.trackId !== undefined) {
      request.track_id = params.trackId;
    }
    // NOT_FOUND for the session this client holds: it moved (see moved()); re-join, then once more.
    return this.callStopAudio(request, userId).then(async (result) =>
      result.grpcCode === grpc.status.NOT_FOUND && (await this.moved(userId, "StopAudio")) ? this.callStopAudio(request, userId) : result,
    );
  }

  private callStopAudio(request: StopAudioRequest, userId: string): Promise<StopAudioResult> {
    return new Promise((resolve) => {
      const onReply: grpc.requestCallback<StopAudioResponse__Output> = (err, response) => {
        if (err || response === undefined) {
          const error = err ? grpcMessage(err) : "StopAudio returned no response";
          this.logger.warn({ userId, error }, "StopAudio failed");
          resolve(err ? { success: false, error, grpcCode: err.code } : { success: false, error });
          return;
        }
        const result: StopAudioResult = { success: response.success };
        if (response.error) {
          result.error = response.error;
        }
        if (response.stopped_request_id) {
          result.stoppedRequestId = response.stopped_request_id;
        }
        resolve(result);
      };
      try {
        this.lease.stub.stopAudio(request, routingMetadata(userId), this.callOptions(), onReply);
      } catch (err) {
        resolve({ success: false, error: `StopAudio failed: ${describeError(err)}`, grpcCode: grpc.status.UNAVAILABLE });
      }
    });
  }

  /** The old name of stopAudio(requestId). */
  stopPlayback(requestId?: string): Promise<StopAudioResult> {
    return this.stopAudio(requestId === undefined ? {} : { requestId });
  }

  /**
   * The bridge's view of this session (GetStatus), in camelCase and in the old snake_case fields.
   * Rejects with the gRPC error (NOT_FOUND: no such session); a client built the old way (with a
   * UserSession) resolves instead, as the old client did, with `connected: false` and
   * `last_disconnect_reason` "client_disposed" or "rpc_error".
   */
  getStatus(): Promise<SessionStatus> {
    const userId = this.userId;
    if (this.legacy && this.disposed) {
      return Promise.resolve(this.fallbackStatus("client_disposed", "client disposed", undefined));
    }
    if (userId === undefined) {
      return Promise.reject(new Error("getStatus() before connect()"));
    }
    if (!this.channel.availability.available) {
      const err = this.channel.availability.error();
      return this.legacy
        ? Promise.resolve(this.fallbackStatus("bridge_unavailable", err.message, grpc.status.UNAVAILABLE))
        : Promise.reject(err);
    }
    return this.callGetStatus(userId, true);
  }

  private callGetStatus(userId: string, mayRetry: boolean): Promise<SessionStatus> {
    return new Promise((resolve, reject) => {
      const fail = (err: Error, code: number | undefined): void => {
        if (mayRetry && code === grpc.status.NOT_FOUND && this.joinedUserId === userId) {
          // The session this client holds is not where the proxy sent the call: it moved.
          void this.moved(userId, "GetStatus").then((rejoined) =>
            rejoined ? this.callGetStatus(userId, false).then(resolve, reject) : finish(err, code),
          );
          return;
        }
        finish(err, code);
      };
      const finish = (err: Error, code: number | undefined): void => {
        if (this.legacy) {
          this.logger.error({ userId, error: describeError(err) }, "GetStatus failed");
          resolve(this.fallbackStatus("rpc_error", describeError(err), code));
        } else {
          reject(err);
        }
      };
      try {
        // No waitForReady here (nor in StopAudio): while the channel reconnects they answer UNAVAILABLE
        // at once; a bridge that just restarted has no session to stop or report anyway.
        this.lease.stub.getStatus({ user_id: userId }, routingMetadata(userId), this.callOptions(), (err, response) => {
          if (err || response === undefined) {
            fail(err ?? new Error("GetStatus returned no response"), err?.code);
            return;
          }
          const lastDisconnectAt = int64ToNumber(response.last_disconnect_at);
          resolve({
            connected: response.connected,
            participantId: response.participant_id,
            participantCount: response.participant_count,
            lastDisconnectAt,
            lastDisconnectReason: response.last_disconnect_reason,
            serverVersion: response.server_version,
            participant_id: response.participant_id,
            participant_count: response.participant_count,
            last_disconnect_at: lastDisconnectAt,
            last_disconnect_reason: response.last_disconnect_reason,
            server_version: response.server_version,
            stream: this.stream.state,
            counters: this.stream.counters,
          });
        });
      } catch (err) {
        fail(err instanceof Error ? err : new Error(String(err)), grpc.status.UNAVAILABLE);
      }
    });
  }

  /** Stops streaming and reconnecting, hands on buffered audio, and leaves the room. Never rejects. */
  async disconnect(): Promise<void> {
    this.cancelRejoin();
    await this.serial.run(async () => {
      this.params = undefined;
      this.stream.close();
      this.pacer.flush();
      if (this.joinedUserId !== undefined && !this.channel.availability.available) {
        // LeaveRoom cannot reach the bridge; a session it still has ends by its idle TTL.
        this.logger.warn({ userId: this.joinedUserId }, "bridge unreachable: not calling LeaveRoom");
        this.joinedUserId = undefined;
      } else if (this.joinedUserId !== undefined) {
        await this.leave(this.joinedUserId, "disconnect");
      }
    });
  }

  /**
   * Disconnects for good: playbacks are cancelled (their promises resolve with FAILED), the room is
   * left, no timer or listener remains. Idempotent: every call returns the same promise, which never
   * rejects, so the old fire-and-forget `client.dispose()` is safe. The shared channel stays open
   * for the other sessions.
   */
  dispose(): Promise<void> {
    if (this.disposing === undefined) {
      for (const playback of this.playbacks) {
        playback.cancel();
      }
      this.disposing = this.disconnect()
        .catch((err: unknown) => this.logger.warn({ error: describeError(err) }, "disconnect on dispose failed"))
        .finally(() => {
          this.stopWatchingAvailability();
          this.stream.dispose();
          this.pacer.close();
          this.lease.release();
          this.playAudioHandlers.clear();
          this.legacyEventHandler = undefined;
        });
    }
    return this.disposing;
  }

  private sessionParams(params: ConnectParams): SessionParams {
    const userId = params.userId || this.defaultUserId;
    if (!userId || !params.token) {
      throw new TypeError("connect() needs a token and a user (params.userId, options.userId or the UserSession)");
    }
    return { ...params, userId };
  }

  private fallbackStatus(reason: string, error: string, grpcCode: number | undefined): SessionStatus {
    const legacy: LegacyBridgeStatus = legacyStatusFallback(reason);
    const status: SessionStatus = {
      ...legacy,
      participantId: "",
      participantCount: 0,
      lastDisconnectAt: 0,
      lastDisconnectReason: reason,
      serverVersion: "",
      stream: this.stream.state,
      counters: this.stream.counters,
      error,
    };
    if (grpcCode !== undefined) {
      status.grpcCode = grpcCode;
    }
    return status;
  }

  /** One listener for a playback's events: the caller's, the onPlayAudioEvent handler, the onEvent handler. */
  private fanOut(params: PlayAudioParams, onEvent: PlayAudioListener | undefined): PlayAudioListener {
    const guard = (what: string, deliver: () => void): void => {
      try {
        deliver();
      } catch (err) {
        this.logger.error({ requestId: params.requestId, error: describeError(err) }, `${what} threw`);
      }
    };
    return (event) => {
      if (onEvent !== undefined) {
        guard("PlayAudio event callback", () => onEvent(event));
      }
      const handler = this.playAudioHandlers.get(params.requestId);
      if (handler !== undefined) {
        if (event.type === "COMPLETED" || event.type === "FAILED") {
          this.playAudioHandlers.delete(params.requestId);
        }
        guard("onPlayAudioEvent handler", () => handler(event));
      }
      const legacyHandler = this.legacyEventHandler;
      const legacyEvent = legacyHandler === undefined ? undefined : toLegacyEvent(event, params.url);
      if (legacyHandler !== undefined && legacyEvent !== undefined) {
        guard("onEvent handler", () => legacyHandler(legacyEvent));
      }
    };
  }

  /** A playback that could not even start: one FAILED event, like any other failure. */
  private failLocally(requestId: string, error: string, grpcCode: number, listener: PlayAudioListener): Promise<PlayAudioEvent> {
    const event = failedEvent(requestId, error, grpcCode);
    listener(event);
    return Promise.resolve(event);
  }

  private assertAvailable(): void {
    if (!this.channel.availability.available) {
      throw this.channel.availability.error();
    }
  }

  /** A FAILED event for a playback refused (or ended) because the bridge is unreachable. */
  private unavailableEvent(requestId: string): PlayAudioEvent {
    return failedEvent(requestId, this.channel.availability.error().message, grpc.status.UNAVAILABLE, "bridge_unavailable");
  }

  /** The bridge became unreachable (fail fast from now on) or reachable again (re-join). */
  private availabilityChanged(change: AvailabilityChange): void {
    if (this.disposed) {
      return;
    }
    if (!change.available) {
      this.logger.warn(
        { userId: this.userId, failedAttempts: change.failedAttempts, retryInMs: change.retryInMs },
        "bridge unreachable: calls fail fast until it is back",
      );
      for (const call of [...this.joinCalls]) {
        call.cancel(); // rejects with BridgeUnavailableError (see join())
      }
      for (const playback of [...this.playbacks]) {
        playback.fail(this.unavailableEvent(playback.requestId));
      }
      if (this.params !== undefined) {
        this.stream.suspend(change.retryInMs ?? 0, this.channel.availability.error().message);
      }
      return;
    }
    this.logger.info(
      { userId: this.userId, unavailableForMs: change.unavailableForMs, recoveredBy: change.recoveredBy },
      "bridge reachable again",
    );
    this.stream.resume();
  }

  private assertUsable(): void {
    if (this.disposing !== undefined) {
      throw new ClientDisposedError();
    }
  }

  private callOptions(): grpc.CallOptions {
    return { deadline: Date.now() + this.callTimeoutMs };
  }

  /** Background re-join for the stream, serialized with connect()/disconnect(). */
  private backgroundRejoin(isCurrent: () => boolean): Promise<void> {
    return this.serial.run(async () => {
      const params = this.params;
      if (!isCurrent() || params === undefined) {
        return; // obsolete: the stream sees isCurrent() false and stops
      }
      if (this.channel.closed) {
        // The application closed the channel (shutting down): retrying could never succeed.
        this.logger.warn({ userId: params.userId }, "bridge channel closed; not reconnecting");
        this.stream.close();
        return;
      }
      const availability = this.channel.availability;
      if (!availability.available) {
        // No re-join while the bridge is away: the stream waits for availabilityChanged() to resume it.
        this.stream.suspend(availability.retryInMs, availability.error().message);
        return;
      }
      // waitForReady: while the bridge restarts, the call waits for the channel to reconnect
      // (within a second of the bridge being back) instead of failing at once.
      await this.join(params, (call) => {
        this.rejoinCall = call;
      });
    });
  }

  /**
   * A call answered NOT_FOUND for the session this client holds, or its bridge sent the "draining"
   * notice. Behind a proxy NOT_FOUND means the session is not where the proxy sends this user now:
   * its bridge is gone (killed, drained), or the proxy's ring moved the user. Re-joins with the current parameters (JoinRoom goes wherever the
   * proxy sends it now), make-before-break: the current audio stream stays open until the new one
   * replaces it (LiveKit disconnects the older participant of the same identity, which ends the old
   * session). Resolves true once the session is back, false when this client holds no session for
   * `userId` or the re-join failed (the stream then recovers as usual). Concurrent callers share one
   * re-join; each caller retries its call once at most.
   */
  private moved(userId: string, call: string): Promise<boolean> {
    if (this.disposed || this.params?.userId !== userId) {
      return Promise.resolve(false);
    }
    if (this.moving === undefined) {
      this.logger.warn({ userId, call }, "session moved or its bridge is draining: re-joining make-before-break");
      const moving = this.serial
        .run(async () => {
          const params = this.params;
          if (params === undefined || params.userId !== userId || this.disposed) {
            return false;
          }
          this.stream.beginHandover();
          try {
            await this.join(params, undefined);
          } catch (err) {
            this.stream.abortHandover(describeError(err));
            this.logger.warn({ userId, error: describeError(err) }, "re-joining a moved session failed");
            return false;
          }
          this.stream.open(userId);
          this.logger.info({ userId }, "moved session re-joined; audio stream replaced");
          return true;
        })
        .finally(() => {
          if (this.moving === moving) {
            this.moving = undefined;
          }
        });
      this.moving = moving;
    }
    return this.moving;
  }

  private cancelRejoin(): void {
    this.rejoinCall?.cancel();
    this.rejoinCall = undefined;
  }

  /**
   * JoinRoom; a refusal that another bridge would not give is tried again, up to JOIN_ATTEMPTS
   * times JOIN_RETRY_MS apart (1 s in all): RESOURCE_EXHAUSTED (that bridge is full) and UNAVAILABLE "draining".
   * Behind a proxy the next attempt goes to another bridge once the proxy's health check has seen
   * the refusing one leave the ring (every 250 ms in deploy/haproxy/haproxy.cfg).
   */
  private async join(params: SessionParams, track: ((call: grpc.ClientUnaryCall) => void) | undefined): Promise<JoinResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.joinOnce(params, track);
      } catch (err) {
        const retryable =
          err instanceof JoinRoomError &&
          (err.grpcCode === grpc.status.RESOURCE_EXHAUSTED || (err.grpcCode === grpc.status.UNAVAILABLE && /draining/.test(err.message)));
        if (!retryable || attempt >= JOIN_ATTEMPTS || this.disposed) {
          throw err;
        }
        this.logger.info({ userId: params.userId, attempt, error: err.message }, "JoinRoom refused by a full or draining bridge; trying again");
        await new Promise((resolve) => setTimeout(resolve, JOIN_RETRY_MS));
      }
    }
  }

  /** One JoinRoom call. `track` is given for background re-joins (cancelled by connect()). */
  private joinOnce(params: SessionParams, track: ((call: grpc.ClientUnaryCall) => void) | undefined): Promise<JoinResult> {
    const request: JoinRoomRequest = {
      user_id: params.userId,
      room_name: params.roomName,
      token: params.token,
      livekit_url: params.url,
      target_identity: params.targetIdentity || params.userId,
    };
    // waitForReady: a JoinRoom made while the channel reconnects (a bridge restart) waits for it
    // (within its deadline) instead of failing at once; if the bridge stays away,
    // availabilityChanged() cancels it.
    const metadata = routingMetadata(params.userId, true);
    const options: grpc.CallOptions = { deadline: Date.now() + this.joinTimeoutMs };
    // The bridge redacts tokens from its errors; this is a second line of defence, because these
    // messages end up in the cloud's logs.
    const redact = (text: string): string => text.split(params.token).join("[token]");
    return new Promise((resolve, reject) => {
      const call = this.lease.stub.joinRoom(request, metadata, options, (err, response) => {
        this.joinCalls.delete(call);
        if (this.rejoinCall === call) {
          this.rejoinCall = undefined;
        }
        if (err && !this.channel.availability.available) {
          reject(this.channel.availability.error());
          return;
        }
        if (err || response === undefined) {
          const message = err ? `JoinRoom failed: ${grpcMessage(err)}` : "JoinRoom returned no response";
          reject(new JoinRoomError(redact(message), err?.code));
          return;
        }
        // The bridge may have replaced an older session of this user: either way one exists now,
        // or none if the join failed.
        this.joinedUserId = response.success ? params.userId : undefined;
        if (!response.success) {
          reject(new JoinRoomError(redact(response.error || "JoinRoom failed")));
          return;
        }
        resolve({
          participantId: response.participant_id,
          participantCount: response.participant_count,
          metadata: { ...response.metadata },
        });
      });
      this.joinCalls.add(call);
      track?.(call);
    });
  }

  /** LeaveRoom; never rejects (a session the bridge no longer has is already left). */
  private leave(userId: string, reason: string): Promise<void> {
    return new Promise((resolve) => {
      const onReply: grpc.requestCallback<LeaveRoomResponse__Output> = (err, response) => {
        this.joinedUserId = undefined;
        if (err) {
          this.logger.warn({ userId, error: grpcMessage(err) }, "LeaveRoom failed");
        } else if (response !== undefined && !response.success) {
          this.logger.debug({ userId, error: response.error }, "LeaveRoom: no session on the bridge");
        }
        resolve();
      };
      try {
        this.lease.stub.leaveRoom({ user_id: userId, reason }, routingMetadata(userId), this.callOptions(), onReply);
      } catch (err) {
        this.joinedUserId = undefined;
        this.logger.warn({ userId, error: describeError(err) }, "LeaveRoom failed");
        resolve();
      }
    });
  }
}
