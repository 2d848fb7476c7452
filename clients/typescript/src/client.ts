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
import { type BridgeChannel, type ChannelLease, sharedBridgeChannel } from "./channel";
import { int64ToNumber, type PlayAudioEvent } from "./events";
import type { JoinRoomRequest } from "./generated/mentra/livekit/bridge/JoinRoomRequest";
import type { LeaveRoomResponse__Output } from "./generated/mentra/livekit/bridge/LeaveRoomResponse";
import type { StopAudioRequest } from "./generated/mentra/livekit/bridge/StopAudioRequest";
import type { StopAudioResponse__Output } from "./generated/mentra/livekit/bridge/StopAudioResponse";
import { describeError, type Logger, silentLogger } from "./logger";
import { AudioPacer, type AudioPacerOptions } from "./pacer";
import { failedEvent, type Playback, type PlayAudioListener, type PlayAudioParams, startPlayback } from "./playback";
import { SerialQueue } from "./serial";
import { type AudioStreamState, ReconnectingAudioStream, type StateChange, type StreamCounters } from "./stream";

export interface ConnectParams {
  userId: string;
  roomName: string;
  /** LiveKit JWT for the bridge's participant. Never logged. */
  token: string;
  /** LiveKit server URL; empty = the bridge's LIVEKIT_URL. */
  url: string;
  /** Identity whose audio is forwarded. Default: userId (the phone joins with the user id as identity). */
  targetIdentity?: string;
}

export interface JoinResult {
  participantId: string;
  participantCount: number;
  metadata: Record<string, string>;
}

export interface StopAudioParams {
  /** Stop this playback; else the playback on `trackId`; else everything. */
  requestId?: string;
  trackId?: number;
  reason?: string;
}

export interface StopAudioResult {
  success: boolean;
  error?: string;
  stoppedRequestId?: string;
  /** The gRPC status code when the call itself failed. */
  grpcCode?: number;
}

export interface SessionStatus {
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
}

export interface ReconnectOptions extends BackoffOptions {
  /** A stream that lived this long before ending starts the backoff from the beginning. Default 5000 ms. */
  stableAfterMs?: number;
}

export interface LiveKitGrpcClientOptions {
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
  /** The parameters of the room this client wants to be in; undefined when it wants none. */
  private params: ConnectParams | undefined;
  /** The user whose session exists on the bridge (joined, not yet left). */
  private joinedUserId: string | undefined;
  private rejoinCall: grpc.ClientUnaryCall | undefined;
  private disposing: Promise<void> | undefined;

  constructor(options: LiveKitGrpcClientOptions = {}) {
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
      openCall: () => this.lease.stub.streamAudio(),
      rejoin: (isCurrent: () => boolean) => this.rejoin(isCurrent),
      onAudio: (chunk: { pcm_data: Buffer }) => this.pacer.push(chunk.pcm_data),
      backoff: new Backoff(reconnect),
      logger: this.logger,
      ...(options.onStateChange === undefined ? {} : { onStateChange: options.onStateChange }),
      ...(reconnect.stableAfterMs === undefined ? {} : { stableAfterMs: reconnect.stableAfterMs }),
      ...(options.maxPendingWrites === undefined ? {} : { maxPendingWrites: options.maxPendingWrites }),
    };
    this.stream = new ReconnectingAudioStream(streamOptions);
  }

  /** The user of the current (or last) connect(). */
  get userId(): string | undefined {
    return this.params?.userId ?? this.joinedUserId;
  }

  get disposed(): boolean {
    return this.disposing !== undefined;
  }

  /** True while the audio stream is open (not while it reconnects). */
  isConnected(): boolean {
    return this.stream.state === "open";
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
   * join (its `error` text) or the call fails. Calling it again re-joins with the new parameters.
   */
  async connect(params: ConnectParams): Promise<JoinResult> {
    this.assertUsable();
    if (!params.userId || !params.token) {
      throw new TypeError("connect() needs userId and token");
    }
    this.cancelRejoin();
    return this.serial.run(async () => {
      this.assertUsable();
      this.stream.close();
      if (this.joinedUserId !== undefined && this.joinedUserId !== params.userId) {
        await this.leave(this.joinedUserId, "switching user");
      }
      this.params = params;
      try {
        const result = await this.join(params, undefined);
        this.assertUsable();
        this.stream.open(params.userId);
        this.logger.info(
          { userId: params.userId, room: params.roomName, participantCount: result.participantCount },
          "joined LiveKit room via the bridge",
        );
        return result;
      } catch (err) {
        this.params = undefined;
        throw err;
      }
    });
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
   * COMPLETED or FAILED; the promise resolves with that last event and never rejects.
   */
  playAudio(params: PlayAudioParams, onEvent?: PlayAudioListener): Promise<PlayAudioEvent> {
    const userId = this.params?.userId;
    if (this.disposed || userId === undefined) {
      const reason = this.disposed ? "client disposed" : "not connected";
      return this.failLocally(params.requestId, reason, grpc.status.FAILED_PRECONDITION, onEvent);
    }
    const context = { stub: this.lease.stub, userId, eventTypes: this.channel.eventTypes, logger: this.logger };
    let playback: Playback;
    try {
      playback = startPlayback(context, params, onEvent);
    } catch (err) {
      // grpc-js throws at once on a closed channel; the promise still only resolves.
      return this.failLocally(params.requestId, `PlayAudio failed: ${describeError(err)}`, grpc.status.UNAVAILABLE, onEvent);
    }
    this.playbacks.add(playback);
    void playback.done.then(() => this.playbacks.delete(playback));
    return playback.done;
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
    const request: StopAudioRequest = {
      user_id: userId,
      request_id: params.requestId ?? "",
      reason: params.reason ?? "stopAudio",
    };
    if (params.trackId !== undefined) {
      request.track_id = params.trackId;
    }
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
        this.lease.stub.stopAudio(request, this.callOptions(), onReply);
      } catch (err) {
        resolve({ success: false, error: `StopAudio failed: ${describeError(err)}`, grpcCode: grpc.status.UNAVAILABLE });
      }
    });
  }

  /** The bridge's view of this session (GetStatus). Rejects with the gRPC error (NOT_FOUND: no such session). */
  getStatus(): Promise<SessionStatus> {
    const userId = this.userId;
    if (userId === undefined) {
      return Promise.reject(new Error("getStatus() before connect()"));
    }
    return new Promise((resolve, reject) => {
      this.lease.stub.getStatus({ user_id: userId }, this.callOptions(), (err, response) => {
        if (err || response === undefined) {
          reject(err ?? new Error("GetStatus returned no response"));
          return;
        }
        resolve({
          connected: response.connected,
          participantId: response.participant_id,
          participantCount: response.participant_count,
          lastDisconnectAt: int64ToNumber(response.last_disconnect_at),
          lastDisconnectReason: response.last_disconnect_reason,
          serverVersion: response.server_version,
          stream: this.stream.state,
          counters: this.stream.counters,
        });
      });
    });
  }

  /** Stops streaming and reconnecting, hands on buffered audio, and leaves the room. Never rejects. */
  async disconnect(): Promise<void> {
    this.cancelRejoin();
    await this.serial.run(async () => {
      this.params = undefined;
      this.stream.close();
      this.pacer.flush();
      if (this.joinedUserId !== undefined) {
        await this.leave(this.joinedUserId, "disconnect");
      }
    });
  }

  /**
   * Disconnects for good: playbacks are cancelled (their promises resolve with FAILED), the room is
   * left, no timer or listener remains. Idempotent: every call returns the same promise. The shared
   * channel stays open for the other sessions.
   */
  dispose(): Promise<void> {
    if (this.disposing === undefined) {
      for (const playback of this.playbacks) {
        playback.cancel();
      }
      this.disposing = this.disconnect().finally(() => {
        this.stream.dispose();
        this.pacer.close();
        this.lease.release();
      });
    }
    return this.disposing;
  }

  /** A playback that could not even start: one FAILED event, like any other failure. */
  private failLocally(requestId: string, error: string, grpcCode: number, onEvent: PlayAudioListener | undefined): Promise<PlayAudioEvent> {
    const event = failedEvent(requestId, error, grpcCode);
    try {
      onEvent?.(event);
    } catch (err) {
      this.logger.error({ requestId, error: describeError(err) }, "PlayAudio event callback threw");
    }
    return Promise.resolve(event);
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
  private rejoin(isCurrent: () => boolean): Promise<void> {
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
      // waitForReady: while the bridge restarts, the call waits for the channel to reconnect
      // (within a second of the bridge being back) instead of failing at once.
      await this.join(params, (call) => {
        this.rejoinCall = call;
      });
    });
  }

  private cancelRejoin(): void {
    this.rejoinCall?.cancel();
    this.rejoinCall = undefined;
  }

  /** JoinRoom. `track` is given for background re-joins: it waits for the channel and can be cancelled. */
  private join(params: ConnectParams, track: ((call: grpc.ClientUnaryCall) => void) | undefined): Promise<JoinResult> {
    const request: JoinRoomRequest = {
      user_id: params.userId,
      room_name: params.roomName,
      token: params.token,
      livekit_url: params.url,
      target_identity: params.targetIdentity || params.userId,
    };
    // grpc-js takes waitForReady as a metadata option.
    const metadata = new grpc.Metadata({ waitForReady: track !== undefined });
    const options: grpc.CallOptions = { deadline: Date.now() + this.joinTimeoutMs };
    // The bridge redacts tokens from its errors; this is a second line of defence, because these
    // messages end up in the cloud's logs.
    const redact = (text: string): string => text.split(params.token).join("[token]");
    return new Promise((resolve, reject) => {
      const call = this.lease.stub.joinRoom(request, metadata, options, (err, response) => {
        if (this.rejoinCall === call) {
          this.rejoinCall = undefined;
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
        this.lease.stub.leaveRoom({ user_id: userId, reason }, this.callOptions(), onReply);
      } catch (err) {
        this.joinedUserId = undefined;
        this.logger.warn({ userId, error: describeError(err) }, "LeaveRoom failed");
        resolve();
      }
    });
  }
}
