/**
 * An in-process gRPC server speaking the bridge's proto, scripted per test: fast unit tests of the
 * client's wire behaviour (what it sends, how it reads answers) without Python or LiveKit.
 */
import * as grpc from "@grpc/grpc-js";
import type { AudioChunk, AudioChunk__Output } from "../../src/generated/mentra/livekit/bridge/AudioChunk";
import type { BridgeStatusResponse } from "../../src/generated/mentra/livekit/bridge/BridgeStatusResponse";
import type { JoinRoomRequest__Output } from "../../src/generated/mentra/livekit/bridge/JoinRoomRequest";
import type { JoinRoomResponse } from "../../src/generated/mentra/livekit/bridge/JoinRoomResponse";
import type { LeaveRoomRequest__Output } from "../../src/generated/mentra/livekit/bridge/LeaveRoomRequest";
import type { LiveKitBridgeHandlers } from "../../src/generated/mentra/livekit/bridge/LiveKitBridge";
import type { PlayAudioEvent } from "../../src/generated/mentra/livekit/bridge/PlayAudioEvent";
import type { PlayAudioRequest__Output } from "../../src/generated/mentra/livekit/bridge/PlayAudioRequest";
import type { StopAudioRequest__Output } from "../../src/generated/mentra/livekit/bridge/StopAudioRequest";
import { loadBridgeProto } from "../../src/proto";

export type StreamCall = grpc.ServerDuplexStream<AudioChunk__Output, AudioChunk>;
export type PlayCall = grpc.ServerWritableStream<PlayAudioRequest__Output, PlayAudioEvent>;
/** The unary calls a test can make go unanswered (see FakeBridge.unanswered). */
export type UnaryMethod = "JoinRoom" | "LeaveRoom" | "StopAudio" | "GetStatus";

export interface FakeBridgeListen {
  /** Default: plain TCP. */
  credentials?: grpc.ServerCredentials;
  /** Listen on this unix socket instead of 127.0.0.1:port. */
  unixSocket?: string;
}

export class FakeBridge {
  readonly joins: JoinRoomRequest__Output[] = [];
  readonly leaves: LeaveRoomRequest__Output[] = [];
  readonly stops: StopAudioRequest__Output[] = [];
  readonly plays: PlayAudioRequest__Output[] = [];
  readonly streams: StreamCall[] = [];
  /** [method, x-user-id metadata] of every call, in order (what a pool's proxy routes on). */
  readonly routed: [string, string | undefined][] = [];
  /** First message of each StreamAudio call, in order. */
  readonly firstMessages: AudioChunk__Output[] = [];
  /** JoinRoom's answer: a response, or an error the call fails with. */
  joinReply: (request: JoinRoomRequest__Output) => JoinRoomResponse | grpc.ServiceError = () => ({
    success: true,
    participant_id: "PA_fake",
    participant_count: 2,
  });
  /** GetStatus's answer: a response, or an error the call fails with. */
  statusReply: (userId: string) => BridgeStatusResponse | grpc.ServiceError = (userId) => ({
    connected: true,
    participant_id: `PA_${userId}`,
    participant_count: 2,
    last_disconnect_at: "1700000000123",
    server_version: "fake",
  });
  /** Calls of these methods are recorded and never answered: the client's deadline ends them. */
  readonly unanswered = new Set<UnaryMethod>();
  /** What PlayAudio does; by default it answers UNIMPLEMENTED. */
  play: (call: PlayCall) => void = (call) => call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: "not yet" });

  private constructor(
    private readonly server: grpc.Server,
    readonly port: number,
    /** What a client dials: `127.0.0.1:<port>`, or `unix:<path>`. */
    readonly address: string,
  ) {}

  static async start(port = 0, listen: FakeBridgeListen = {}): Promise<FakeBridge> {
    const server = new grpc.Server();
    // eslint-disable-next-line prefer-const -- assigned once below, after the handlers that read it are built
    let bridge: FakeBridge | undefined;
    const self = (): FakeBridge => {
      if (bridge === undefined) {
        throw new Error("FakeBridge not ready");
      }
      return bridge;
    };
    const route = (method: string, call: { metadata: grpc.Metadata }): void => {
      const value = call.metadata.get("x-user-id")[0];
      self().routed.push([method, value === undefined ? undefined : String(value)]);
    };
    const handlers: LiveKitBridgeHandlers = {
      JoinRoom: (call, callback) => {
        route("JoinRoom", call);
        self().joins.push(call.request);
        if (self().unanswered.has("JoinRoom")) {
          return;
        }
        const reply = self().joinReply(call.request);
        if ("code" in reply) {
          callback(reply);
        } else {
          callback(null, reply);
        }
      },
      LeaveRoom: (call, callback) => {
        route("LeaveRoom", call);
        self().leaves.push(call.request);
        if (self().unanswered.has("LeaveRoom")) {
          return;
        }
        callback(null, { success: true });
      },
      StreamAudio: (call) => {
        route("StreamAudio", call);
        call.once("data", (first: AudioChunk__Output) => {
          self().firstMessages.push(first);
          self().streams.push(call);
        });
        call.on("error", () => undefined);
      },
      PlayAudio: (call) => {
        route("PlayAudio", call);
        self().plays.push(call.request);
        self().play(call);
      },
      StopAudio: (call, callback) => {
        route("StopAudio", call);
        self().stops.push(call.request);
        if (self().unanswered.has("StopAudio")) {
          return;
        }
        callback(null, { success: true, stopped_request_id: call.request.request_id });
      },
      HealthCheck: (_call, callback) => callback(null, { status: "SERVING" }),
      GetStatus: (call, callback) => {
        route("GetStatus", call);
        if (self().unanswered.has("GetStatus")) {
          return;
        }
        const reply = self().statusReply(call.request.user_id);
        if ("code" in reply) {
          callback(reply);
        } else {
          callback(null, reply);
        }
      },
    };
    server.addService(loadBridgeProto().grpc.mentra.livekit.bridge.LiveKitBridge.service, handlers);
    const target = listen.unixSocket === undefined ? `127.0.0.1:${port}` : `unix:${listen.unixSocket}`;
    const bound = await new Promise<number>((resolve, reject) => {
      server.bindAsync(target, listen.credentials ?? grpc.ServerCredentials.createInsecure(), (err, actual) =>
        err ? reject(err) : resolve(actual),
      );
    });
    bridge = new FakeBridge(server, bound, listen.unixSocket === undefined ? `127.0.0.1:${bound}` : target);
    return bridge;
  }

  /** Ends StreamAudio call `index` the way the bridge ends a stream cleanly: OK plus the end reason. */
  endStreamCleanly(index: number, reason: string): void {
    const call = this.streams[index];
    if (call === undefined) {
      throw new Error(`no stream ${index}`);
    }
    const metadata = new grpc.Metadata();
    metadata.set("x-bridge-end-reason", reason);
    call.end(metadata);
  }

  /** Stops at once: every open call fails (UNAVAILABLE / connection reset), like a killed bridge. */
  kill(): void {
    this.server.forceShutdown();
  }
}
