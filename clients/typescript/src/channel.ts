/**
 * The gRPC channel to the bridge, shared by every session of the process.
 *
 * Sessions share HTTP/2 connections (re-established by grpc-js when they drop) instead of each
 * paying for one. One connection carries at most `maxSessionsPerConnection` sessions: the bridge
 * (grpclib over h2) allows 100 concurrent streams per connection, and a call beyond that does not
 * fail, it waits, so the 101st session's JoinRoom would hang until its deadline. Each session holds
 * one StreamAudio call plus its PlayAudio calls, so past the limit the channel opens one more
 * connection. The options are tuned for a bridge that runs next to the cloud (same host or pod,
 * unix socket or loopback):
 *
 *  - keepalive pings find a silently dead connection (a network partition gives no RST);
 *  - the channel's own reconnect backoff is short and capped at 1 s, because calls made while it
 *    waits are queued (waitForReady) and a bridge back from a restart should be reached within a
 *    second, not after grpc-js's default backoff of up to 120 s. Connection attempts are per
 *    channel, not per session, so this costs one TCP connect per second while the bridge is down.
 */
import * as grpc from "@grpc/grpc-js";
import { type AvailabilityOptions, BridgeAvailability } from "./availability";
import { type PlayAudioEventType, playAudioEventTypes } from "./events";
import {
  _mentra_livekit_bridge_HealthCheckResponse_ServingStatus as GENERATED_SERVING_STATUS,
  type HealthCheckResponse__Output,
} from "./generated/mentra/livekit/bridge/HealthCheckResponse";
import type { LiveKitBridgeClient } from "./generated/mentra/livekit/bridge/LiveKitBridge";
import { type BridgeProto, checkedEnumNames, type EnumNames, loadBridgeProto } from "./proto";

export interface BridgeChannelOptions {
  /** `host:port` or `unix:/path`. Default: see {@link defaultBridgeAddress}. */
  address?: string;
  /** Default: insecure (the bridge listens on loopback or a unix socket). For TLS: grpc.credentials.createSsl(ca). */
  credentials?: grpc.ChannelCredentials;
  /**
   * The bridge's shared secret (its BRIDGE_AUTH_TOKEN), sent as `authorization: Bearer <token>` on
   * every call. Default: $BRIDGE_AUTH_TOKEN when set, else none. Never logged.
   */
  authToken?: string;
  /** Time between keepalive pings while calls are open. Default 15000 ms. */
  keepaliveTimeMs?: number;
  /** How long a ping may go unanswered before the connection is dropped. Default 5000 ms. */
  keepaliveTimeoutMs?: number;
  /** First delay of the channel's reconnect backoff. Default 100 ms. */
  reconnectInitialMs?: number;
  /** Cap of the channel's reconnect backoff. Default 1000 ms. */
  reconnectMaxMs?: number;
  /** The proto to load. Default: the copy the build placed in dist/proto/. */
  protoPath?: string;
  /** Sessions per HTTP/2 connection before another is opened. Default 40 (the bridge allows 100 streams). */
  maxSessionsPerConnection?: number;
  /** Further grpc-js channel options; they win over the ones above. */
  channelOptions?: grpc.ChannelOptions;
  /** When the bridge counts as away, and for how long calls then fail fast (see BridgeAvailability). */
  availability?: AvailabilityOptions;
}

/** A session's share of the channel: the stub of the connection it uses. Release it when done. */
export interface ChannelLease {
  readonly stub: LiveKitBridgeClient;
  /** Idempotent. */
  release(): void;
}

interface Connection {
  readonly stub: LiveKitBridgeClient;
  sessions: number;
}

/**
 * Where the bridge listens, as the old client decided it: `unix:$LIVEKIT_GRPC_SOCKET` when that is
 * set, else `$LIVEKIT_GRPC_BRIDGE_URL`, else `livekit-bridge:9090`.
 */
export function defaultBridgeAddress(env: NodeJS.ProcessEnv = process.env): string {
  const socket = env["LIVEKIT_GRPC_SOCKET"];
  if (socket) {
    return `unix:${socket}`;
  }
  return env["LIVEKIT_GRPC_BRIDGE_URL"] || "livekit-bridge:9090";
}

/**
 * Adds the bridge's bearer token to every call. An interceptor rather than call credentials because
 * grpc-js refuses call credentials on an insecure channel, and the bridge accepts a token over
 * plain TCP (a private network, or loopback).
 */
function bearerToken(token: string): grpc.Interceptor {
  const value = `Bearer ${token}`;
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        metadata.set("authorization", value);
        next(metadata, listener);
      },
    });
}

export type ServingStatus = HealthCheckResponse__Output["status"];

export interface BridgeHealth {
  status: ServingStatus | undefined;
  activeSessions: number;
  activeStreams: number;
  metadata: Record<string, string>;
}

export class BridgeChannel {
  readonly address: string;
  readonly proto: BridgeProto;
  readonly eventTypes: EnumNames<PlayAudioEventType>;
  readonly maxSessionsPerConnection: number;
  /** Whether the bridge is reachable; shared by every session on this channel. */
  readonly availability: BridgeAvailability;
  private readonly servingStatus: EnumNames<ServingStatus>;
  private readonly clientOptions: grpc.ClientOptions;
  private readonly credentials: grpc.ChannelCredentials;
  private readonly connections: Connection[] = [];
  private closedValue = false;

  constructor(options: BridgeChannelOptions = {}) {
    this.address = options.address ?? defaultBridgeAddress();
    this.proto = loadBridgeProto(options.protoPath);
    this.eventTypes = playAudioEventTypes(this.proto.definition);
    this.servingStatus = checkedEnumNames(
      this.proto.definition,
      "HealthCheckResponse",
      "ServingStatus",
      GENERATED_SERVING_STATUS,
    );
    this.maxSessionsPerConnection = Math.max(1, Math.floor(options.maxSessionsPerConnection ?? 40));
    this.availability = new BridgeAvailability(options.availability);
    this.credentials = options.credentials ?? grpc.credentials.createInsecure();
    const authToken = options.authToken ?? process.env["BRIDGE_AUTH_TOKEN"];
    this.clientOptions = {
      "grpc.keepalive_time_ms": options.keepaliveTimeMs ?? 15_000,
      "grpc.keepalive_timeout_ms": options.keepaliveTimeoutMs ?? 5_000,
      "grpc.initial_reconnect_backoff_ms": options.reconnectInitialMs ?? 100,
      "grpc.max_reconnect_backoff_ms": options.reconnectMaxMs ?? 1_000,
      // Without it, grpc-js would give every client to the same target one shared connection,
      // and the extra connections this class opens would not exist.
      "grpc.use_local_subchannel_pool": 1,
      ...options.channelOptions,
      ...(authToken ? { interceptors: [bearerToken(authToken)] } : {}),
    };
    this.addConnection();
  }

  get closed(): boolean {
    return this.closedValue;
  }

  /** The first connection's stub, for calls that belong to no session (HealthCheck). */
  get stub(): LiveKitBridgeClient {
    const first = this.connections[0];
    if (first === undefined) {
      throw new Error("BridgeChannel is closed");
    }
    return first.stub;
  }

  /** Sessions per connection, for diagnostics. */
  get connectionLoad(): number[] {
    return this.connections.map((connection) => connection.sessions);
  }

  /** A connection for one more session: the least loaded, or a new one when all are full. */
  acquire(): ChannelLease {
    if (this.closedValue) {
      throw new Error("BridgeChannel is closed");
    }
    let connection = this.connections.reduce<Connection | undefined>(
      (best, candidate) => (best === undefined || candidate.sessions < best.sessions ? candidate : best),
      undefined,
    );
    if (connection === undefined || connection.sessions >= this.maxSessionsPerConnection) {
      connection = this.addConnection();
    }
    connection.sessions += 1;
    const leased = connection;
    let released = false;
    return {
      stub: leased.stub,
      release: () => {
        if (!released) {
          released = true;
          leased.sessions -= 1;
        }
      },
    };
  }

  private addConnection(): Connection {
    const Service = this.proto.grpc.mentra.livekit.bridge.LiveKitBridge;
    const connection: Connection = {
      stub: new Service(this.address, this.credentials, this.clientOptions),
      sessions: 0,
    };
    this.connections.push(connection);
    this.availability.watch(connection.stub.getChannel());
    return connection;
  }

  /** Bridge liveness and counters (HealthCheck). Rejects with the gRPC error when the call fails. */
  healthCheck(timeoutMs = 5_000): Promise<BridgeHealth> {
    return new Promise((resolve, reject) => {
      this.stub.healthCheck({}, { deadline: Date.now() + timeoutMs }, (err, response) => {
        if (err || response === undefined) {
          reject(err ?? new Error("HealthCheck returned no response"));
          return;
        }
        resolve({
          status: this.servingStatus.nameOf(response.status),
          activeSessions: response.active_sessions,
          activeStreams: response.active_streams,
          metadata: { ...response.metadata },
        });
      });
    });
  }

  /** Closes the connection; calls still open on it fail with CANCELLED/UNAVAILABLE. Idempotent. */
  close(): void {
    if (!this.closedValue) {
      this.closedValue = true;
      this.availability.close();
      for (const connection of this.connections) {
        connection.stub.close();
      }
      for (const [address, channel] of shared) {
        if (channel === this) {
          shared.delete(address);
        }
      }
    }
  }
}

const shared = new Map<string, BridgeChannel>();

/**
 * The process-wide channel to `address` (created on first use, with `options`; later calls get the
 * same channel whatever options they pass): what every LiveKitGrpcClient uses unless given a
 * channel. Closing it makes the next call create a fresh one.
 */
export function sharedBridgeChannel(address: string = defaultBridgeAddress(), options: Omit<BridgeChannelOptions, "address"> = {}): BridgeChannel {
  let channel = shared.get(address);
  if (channel === undefined) {
    channel = new BridgeChannel({ ...options, address });
    shared.set(address, channel);
  }
  return channel;
}
