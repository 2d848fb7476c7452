/**
 * An in-process gRPC server speaking the bridge's proto, scripted per test: fast unit tests of the
 * client's wire behaviour (what it sends, how it reads answers) without Python or LiveKit.
 */
import { after, before } from "node:test";
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
import { BridgeChannel, LiveKitGrpcClient, type LiveKitGrpcClientOptions } from "../../src/index";
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

  private bound: { port: number; address: string } | undefined;

  private constructor(private readonly server: grpc.Server) {}

  /** The port it listens on (0 for a unix socket's); only once listening. */
  get port(): number {
    return this.listening().port;
  }

  /** What a client dials: `127.0.0.1:<port>`, or `unix:<path>`; only once listening. */
  get address(): string {
    return this.listening().address;
  }

  private listening(): { port: number; address: string } {
    if (this.bound === undefined) {
      throw new Error("FakeBridge not listening yet (start() it, or read it inside a test or hook of useFakeBridge's suite)");
    }
    return this.bound;
  }

  /** A started bridge: made, then listening on `port` (0: any free one) or as `listen` says. */
  static async start(port = 0, listen: FakeBridgeListen = {}): Promise<FakeBridge> {
    const bridge = FakeBridge.create();
    await bridge.listen(port, listen);
    return bridge;
  }

  /** A bridge not yet listening: scriptable at once, dialable after listen(). */
  static create(): FakeBridge {
    const server = new grpc.Server();
    const bridge = new FakeBridge(server);
    const route = (method: string, call: { metadata: grpc.Metadata }): void => {
      const value = call.metadata.get("x-user-id")[0];
      bridge.routed.push([method, value === undefined ? undefined : String(value)]);
    };
    const handlers: LiveKitBridgeHandlers = {
      JoinRoom: (call, callback) => {
        route("JoinRoom", call);
        bridge.joins.push(call.request);
        if (bridge.unanswered.has("JoinRoom")) {
          return;
        }
        const reply = bridge.joinReply(call.request);
        if ("code" in reply) {
          callback(reply);
        } else {
          callback(null, reply);
        }
      },
      LeaveRoom: (call, callback) => {
        route("LeaveRoom", call);
        bridge.leaves.push(call.request);
        if (bridge.unanswered.has("LeaveRoom")) {
          return;
        }
        callback(null, { success: true });
      },
      StreamAudio: (call) => {
        route("StreamAudio", call);
        call.once("data", (first: AudioChunk__Output) => {
          bridge.firstMessages.push(first);
          bridge.streams.push(call);
        });
        call.on("error", () => undefined);
      },
      PlayAudio: (call) => {
        route("PlayAudio", call);
        bridge.plays.push(call.request);
        bridge.play(call);
      },
      StopAudio: (call, callback) => {
        route("StopAudio", call);
        bridge.stops.push(call.request);
        if (bridge.unanswered.has("StopAudio")) {
          return;
        }
        callback(null, { success: true, stopped_request_id: call.request.request_id });
      },
      HealthCheck: (_call, callback) => callback(null, { status: "SERVING" }),
      GetStatus: (call, callback) => {
        route("GetStatus", call);
        if (bridge.unanswered.has("GetStatus")) {
          return;
        }
        const reply = bridge.statusReply(call.request.user_id);
        if ("code" in reply) {
          callback(reply);
        } else {
          callback(null, reply);
        }
      },
    };
    server.addService(loadBridgeProto().grpc.mentra.livekit.bridge.LiveKitBridge.service, handlers);
    return bridge;
  }

  /** Starts listening on `port` (0: any free one), or as `listen` says; once only. */
  async listen(port = 0, listen: FakeBridgeListen = {}): Promise<void> {
    if (this.bound !== undefined) {
      throw new Error(`FakeBridge already listening on ${this.bound.address}`);
    }
    const target = listen.unixSocket === undefined ? `127.0.0.1:${port}` : `unix:${listen.unixSocket}`;
    const actual = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(target, listen.credentials ?? grpc.ServerCredentials.createInsecure(), (err, bound) =>
        err ? reject(err) : resolve(bound),
      );
    });
    this.bound = { port: actual, address: listen.unixSocket === undefined ? `127.0.0.1:${actual}` : target };
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

/** What useFakeBridge() gives a suite. `client` is a plain function: destructure it freely. */
export interface FakeBridgeSuite {
  /** The suite's bridge: scriptable at once; its address and port from the suite's `before` hook on. */
  readonly bridge: FakeBridge;
  /** The bridge's address (from the suite's `before` hook on). */
  readonly address: string;
  /** A channel to the bridge, made in the suite's `before` hook, closed in its `after` hook. */
  readonly channel: BridgeChannel;
  /** A client on the suite's channel, disposed after the suite even when its test fails midway. */
  readonly client: (options?: LiveKitGrpcClientOptions) => LiveKitGrpcClient;
}

/**
 * A fake bridge for the calling `describe`: its `before` hook starts the bridge and opens a channel
 * to it; its `after` hook disposes every client made with `client()`, then closes the channel and
 * kills the bridge. Call it in the `describe` body, outside any test.
 */
export function useFakeBridge(): FakeBridgeSuite {
  const bridge = FakeBridge.create();
  let channel: BridgeChannel | undefined;
  const clients: LiveKitGrpcClient[] = [];
  const suiteChannel = (): BridgeChannel => {
    if (channel === undefined) {
      throw new Error("useFakeBridge: no channel before the suite's before hook has run");
    }
    return channel;
  };

  before(async () => {
    await bridge.listen();
    channel = new BridgeChannel({ address: bridge.address });
  });
  after(async () => {
    await Promise.all(clients.map((client) => client.dispose()));
    channel?.close();
    bridge.kill();
  });

  return {
    bridge,
    get address() {
      return bridge.address;
    },
    get channel() {
      return suiteChannel();
    },
    client: (options = {}) => {
      const client = new LiveKitGrpcClient({ channel: suiteChannel(), ...options });
      clients.push(client);
      return client;
    },
  };
}
