/**
 * The client's and the channel's options (README, "Options"), against a scripted in-process bridge:
 * the deadlines, the address taken from the environment, TLS credentials, keepalive.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  BridgeChannel,
  JoinRoomError,
  LiveKitGrpcClient,
  type LiveKitGrpcClientOptions,
  type Logger,
  sharedBridgeChannel,
} from "../../src/index";
import { FakeBridge, useFakeBridge } from "../support/fake-bridge";
import { waitFor } from "../support/process";
import { selfSignedCertificate } from "../support/self-signed";

function connectParams(userId: string) {
  return { userId, roomName: "room-1", token: "token-1", url: "ws://127.0.0.1:7880" };
}

/**
 * The deadlines under test, and how far from them an answer may come. Not earlier than the deadline
 * (less a little for the millisecond clock grpc-js sets it with); not later than 2.5 s after it,
 * which a loaded 2-core machine stays well within, and which is still far below the defaults
 * (5 s for calls, 20 s for JoinRoom): a client that ignored the option would miss the bound.
 */
const DEADLINE_MS = 300;
const EARLY_MS = 25;
const LATE_MS = 2_500;

async function timed<T>(work: Promise<T>): Promise<{ result: T; ms: number }> {
  const started = performance.now();
  const result = await work;
  return { result, ms: performance.now() - started };
}

function assertAboutDeadline(ms: number, what: string): void {
  assert.ok(ms >= DEADLINE_MS - EARLY_MS && ms < DEADLINE_MS + LATE_MS, `${what} after ${Math.round(ms)} ms, deadline ${DEADLINE_MS} ms`);
}

describe("client and channel options against a scripted in-process bridge", () => {
  // The bridge, started in a before hook; newClient() makes a client on a channel to it, disposed
  // after the suite even when its test fails midway.
  const { bridge, client: newClient } = useFakeBridge();

  test("joinTimeoutMs is JoinRoom's deadline: a bridge that never answers fails connect() with DEADLINE_EXCEEDED then", async () => {
    bridge.unanswered.add("JoinRoom");
    try {
      const client = newClient({ joinTimeoutMs: DEADLINE_MS });
      const { result: err, ms } = await timed(client.connect(connectParams("join-late")).then(() => undefined, (e: unknown) => e));
      assert.ok(err instanceof JoinRoomError, `rejected with ${String(err)}`);
      assert.equal(err.grpcCode, grpc.status.DEADLINE_EXCEEDED);
      assertAboutDeadline(ms, "connect() rejected");
      assert.equal(bridge.joins.filter((j) => j.user_id === "join-late").length, 1, "one JoinRoom, not tried again");
      assert.equal(client.isConnecting(), false);
    } finally {
      bridge.unanswered.delete("JoinRoom");
    }
  });

  test("callTimeoutMs is the deadline of StopAudio, GetStatus and LeaveRoom", async () => {
    const warnings: string[] = [];
    const logger: Logger = {
      debug: () => undefined,
      info: () => undefined,
      warn: (fields, message) => warnings.push(`${message ?? ""} ${JSON.stringify(fields)}`),
      error: () => undefined,
    };
    const client = newClient({ callTimeoutMs: DEADLINE_MS, logger });
    await client.connect(connectParams("calls-late"));
    bridge.unanswered.add("StopAudio");
    bridge.unanswered.add("GetStatus");
    bridge.unanswered.add("LeaveRoom");
    try {
      const stop = await timed(client.stopAudio({ requestId: "r1" }));
      assert.equal(stop.result.success, false);
      assert.equal(stop.result.grpcCode, grpc.status.DEADLINE_EXCEEDED);
      assertAboutDeadline(stop.ms, "StopAudio answered");

      const status = await timed(client.getStatus().then(() => undefined, (e: unknown) => e));
      assert.equal((status.result as grpc.ServiceError | undefined)?.code, grpc.status.DEADLINE_EXCEEDED, `rejected with ${String(status.result)}`);
      assertAboutDeadline(status.ms, "GetStatus rejected");

      const leave = await timed(client.disconnect());
      assertAboutDeadline(leave.ms, "disconnect() returned");
      assert.equal(bridge.leaves.filter((l) => l.user_id === "calls-late").length, 1);
      assert.ok(
        warnings.some((w) => w.startsWith("LeaveRoom failed") && w.includes("DEADLINE_EXCEEDED")),
        `LeaveRoom ended by its deadline: ${warnings.join("; ")}`,
      );
    } finally {
      bridge.unanswered.clear();
    }
  });

  test("without address or channel: $LIVEKIT_GRPC_BRIDGE_URL; unix:$LIVEKIT_GRPC_SOCKET wins over it; an address given wins over both", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "lkb-options-"));
    const socketBridge = await FakeBridge.start(0, { unixSocket: path.join(dir, "bridge.sock") });
    const saved = { socket: process.env["LIVEKIT_GRPC_SOCKET"], url: process.env["LIVEKIT_GRPC_BRIDGE_URL"] };
    const made: LiveKitGrpcClient[] = [];
    const joinedAt = (user: string): string[] =>
      [
        ["tcp", bridge],
        ["unix", socketBridge],
      ].flatMap(([where, at]) => ((at as FakeBridge).joins.some((j) => j.user_id === user) ? [where as string] : []));
    const connectNew = async (user: string, options: LiveKitGrpcClientOptions = {}): Promise<void> => {
      const client = new LiveKitGrpcClient({ userId: user, ...options }); // no channel: the shared one for the address
      made.push(client);
      await client.connect(connectParams(user));
    };
    try {
      delete process.env["LIVEKIT_GRPC_SOCKET"];
      process.env["LIVEKIT_GRPC_BRIDGE_URL"] = bridge.address;
      await connectNew("env-url");
      assert.deepEqual(joinedAt("env-url"), ["tcp"]);

      process.env["LIVEKIT_GRPC_SOCKET"] = path.join(dir, "bridge.sock");
      await connectNew("env-socket");
      assert.deepEqual(joinedAt("env-socket"), ["unix"]);

      await connectNew("given", { address: bridge.address });
      assert.deepEqual(joinedAt("given"), ["tcp"]);
    } finally {
      for (const [name, value] of [
        ["LIVEKIT_GRPC_SOCKET", saved.socket],
        ["LIVEKIT_GRPC_BRIDGE_URL", saved.url],
      ] as const) {
        if (value === undefined) {
          delete process.env[name];
        } else {
          process.env[name] = value;
        }
      }
      await Promise.all(made.map((client) => client.dispose()));
      sharedBridgeChannel(bridge.address).close();
      sharedBridgeChannel(socketBridge.address).close();
      socketBridge.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("credentials: a TLS bridge is joined with grpc.credentials.createSsl(its certificate), and a plain-text client cannot join it", async () => {
    const { cert, key } = selfSignedCertificate();
    const tlsBridge = await FakeBridge.start(0, {
      credentials: grpc.ServerCredentials.createSsl(null, [{ cert_chain: cert, private_key: key }]),
    });
    // By name, as a TLS client should (the certificate names localhost; the bridge listens on 127.0.0.1).
    const address = `localhost:${tlsBridge.port}`;
    const secure = new BridgeChannel({ address, credentials: grpc.credentials.createSsl(cert) });
    const plain = new BridgeChannel({ address });
    const tlsClient = new LiveKitGrpcClient({ channel: secure });
    const plainClient = new LiveKitGrpcClient({ channel: plain, joinTimeoutMs: 1_000 });
    try {
      await tlsClient.connect(connectParams("over-tls"));
      await waitFor(() => tlsBridge.firstMessages.some((m) => m.user_id === "over-tls"), 2000, "the stream over TLS");
      // The control: this bridge really speaks only TLS, so the join above went over it.
      await assert.rejects(plainClient.connect(connectParams("plain-text")), JoinRoomError);
      assert.equal(tlsBridge.joins.filter((j) => j.user_id === "plain-text").length, 0);
    } finally {
      await Promise.all([tlsClient.dispose(), plainClient.dispose()]);
      secure.close();
      plain.close();
      tlsBridge.kill();
    }
  });

  test("keepalive: grpc-js gets pings every 15 s with a 5 s timeout by default; keepaliveTimeMs/keepaliveTimeoutMs change them", async () => {
    // grpc-js's own hook for making a client's channel receives exactly the options the client was
    // built with; the channel made here is the one the calls then use.
    const seen: grpc.ClientOptions[] = [];
    const recording = (address: string, credentials: grpc.ChannelCredentials, options: grpc.ClientOptions): grpc.Channel => {
      seen.push({ ...options });
      return new grpc.Channel(address, credentials, options);
    };
    const defaults = new BridgeChannel({ address: bridge.address, channelOptions: { channelFactoryOverride: recording } });
    const tuned = new BridgeChannel({
      address: bridge.address,
      keepaliveTimeMs: 30_000,
      keepaliveTimeoutMs: 2_000,
      channelOptions: { channelFactoryOverride: recording },
    });
    const client = new LiveKitGrpcClient({ channel: defaults });
    try {
      const keepalive = (options: grpc.ClientOptions | undefined): unknown[] => [
        options?.["grpc.keepalive_time_ms"],
        options?.["grpc.keepalive_timeout_ms"],
      ];
      assert.equal(seen.length, 2, "one channel made per BridgeChannel (its first connection)");
      assert.deepEqual(keepalive(seen[0]), [15_000, 5_000]);
      assert.deepEqual(keepalive(seen[1]), [30_000, 2_000]);
      await client.connect(connectParams("keepalive"));
      assert.equal(bridge.joins.filter((j) => j.user_id === "keepalive").length, 1, "calls go through the recorded channel");
    } finally {
      await client.dispose();
      defaults.close();
      tuned.close();
    }
  });
});
