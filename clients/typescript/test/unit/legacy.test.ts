/* eslint-disable @typescript-eslint/no-floating-promises -- these tests call the legacy API as the cloud's old callers do: fire and forget */
/**
 * The old client's API, called the way the cloud's LiveKitManager and SpeakerManager call it,
 * against a scripted in-process bridge: what goes on the wire and what the old callers get back.
 * (test/integration/legacy.test.ts does the same against the real bridge and LiveKit.)
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import DefaultExport, {
  type LegacyBridgeEvent,
  LiveKitGrpcClient,
  type Logger,
  type PlayAudioEvent,
  sharedBridgeChannel,
} from "../../src/index";
import { FakeBridge } from "../support/fake-bridge";
import { sleep, waitFor } from "../support/process";

const TOKEN = "eyJhbGciOiJIUzI1NiJ9.legacy-token.sig";

/** A stand-in for the cloud's UserSession: a pino-like logger with child(), and an AudioManager. */
class FakeUserSession {
  readonly childBindings: Array<Record<string, unknown>> = [];
  readonly records: Array<{ level: string; fields: Record<string, unknown>; message?: string | undefined }> = [];
  readonly logger: Logger & { child(bindings: Record<string, unknown>): Logger };
  readonly audioManager = {
    received: [] as Buffer[],
    failNext: false,
    // Async, like the cloud's: a rejection must not become an unhandled rejection.
    // eslint-disable-next-line @typescript-eslint/require-await -- the throw below must reject, not throw
    processAudioData: async (pcm: Buffer): Promise<void> => {
      this.audioManager.received.push(Buffer.from(pcm));
      if (this.audioManager.failNext) {
        this.audioManager.failNext = false;
        throw new Error("audio manager failed");
      }
    },
  };

  constructor(readonly userId: string) {
    const at =
      (level: string) =>
      (fields: Record<string, unknown>, message?: string): void => {
        this.records.push({ level, fields, message });
      };
    const logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
    this.logger = {
      ...logger,
      child: (bindings) => {
        this.childBindings.push(bindings);
        return logger;
      },
    };
  }
}

function roomParams(user: string, token = TOKEN) {
  return { url: "ws://127.0.0.1:7880", roomName: user, token, targetIdentity: user };
}

describe("the old LiveKitGrpcClient API (new LiveKitGrpcClient(userSession))", () => {
  let bridge: FakeBridge;
  const clients: LiveKitGrpcClient[] = [];

  function oldClient(session: FakeUserSession): LiveKitGrpcClient {
    const client = new LiveKitGrpcClient(session, bridge.address);
    clients.push(client);
    return client;
  }

  before(async () => {
    bridge = await FakeBridge.start();
  });
  after(async () => {
    for (const client of clients) {
      client.dispose();
    }
    await Promise.all(clients.map((client) => client.dispose()));
    sharedBridgeChannel(bridge.address).close();
    bridge.kill();
  });

  test("the default export is the class", () => {
    assert.equal(DefaultExport, LiveKitGrpcClient);
  });

  test("connect() without a userId joins as the session's user; room audio reaches audioManager.processAudioData", async () => {
    const session = new FakeUserSession("old-alice");
    const client = oldClient(session);
    assert.deepEqual(session.childBindings, [{ service: "LiveKitGrpcClient", feature: "livekit-grpc" }]);
    assert.equal(client.isConnecting(), false);
    const connecting = client.connect({ ...roomParams("old-alice"), targetIdentity: "phone-alice" });
    assert.equal(client.isConnecting(), true, "isConnecting() while connect() runs");
    await connecting;
    assert.equal(client.isConnecting(), false);
    assert.equal(client.isConnected(), true);
    const join = bridge.joins.at(-1);
    assert.deepEqual(
      [join?.user_id, join?.room_name, join?.token, join?.target_identity],
      ["old-alice", "old-alice", TOKEN, "phone-alice"],
    );
    await waitFor(() => bridge.firstMessages.some((m) => m.user_id === "old-alice"), 2000, "the stream");
    const stream = bridge.streams[bridge.firstMessages.findIndex((m) => m.user_id === "old-alice")];
    session.audioManager.failNext = true; // its promise rejects: logged, not an unhandled rejection
    stream?.write({ pcm_data: Buffer.from([1, 2, 3, 4]), sample_rate: 16000, channels: 1 });
    stream?.write({ pcm_data: Buffer.from([5, 6]), sample_rate: 16000, channels: 1 });
    await waitFor(() => session.audioManager.received.length === 2, 2000, "room audio at the audio manager");
    assert.deepEqual(session.audioManager.received.map((b) => [...b]), [[1, 2, 3, 4], [5, 6]]);
    await waitFor(() => session.records.some((r) => r.message === "processAudioData failed"), 2000, "the failure logged");

    assert.equal(client.sendAudioChunk(Buffer.alloc(320)), true);
    client.enableSubscribe("old-alice"); // no-ops, as before
    client.disableSubscribe();
    assert.equal(client.isConnected(), true);
    client.dispose(); // fire and forget
    await waitFor(() => bridge.leaves.some((l) => l.user_id === "old-alice"), 2000, "LeaveRoom");
  });

  test("a second connect() with the same parameters while the first runs shares it: one JoinRoom", async () => {
    const session = new FakeUserSession("old-bob");
    const client = oldClient(session);
    const joinsBefore = bridge.joins.filter((j) => j.user_id === "old-bob").length;
    const [a, b] = await Promise.all([client.connect(roomParams("old-bob")), client.connect(roomParams("old-bob"))]);
    assert.equal(a, b);
    assert.equal(bridge.joins.filter((j) => j.user_id === "old-bob").length, joinsBefore + 1);
    await client.dispose();
  });

  test("playUrl/playAudio: events reach onPlayAudioEvent with their real types and onEvent as play_started/play_complete", async () => {
    bridge.play = (call) => {
      const id = call.request.request_id;
      call.write({ type: "STARTED", request_id: id });
      call.write({ type: "PROGRESS", request_id: id, position_ms: "250" });
      call.write({ type: "COMPLETED", request_id: id, duration_ms: "1500", position_ms: "1500" });
      call.end();
    };
    const session = new FakeUserSession("old-carol");
    const client = oldClient(session);
    await client.connect(roomParams("old-carol"));
    const events: PlayAudioEvent[] = [];
    const legacy: LegacyBridgeEvent[] = [];
    client.onEvent(() => assert.fail("replaced by the next onEvent()"));
    client.onEvent((event) => legacy.push(event));
    client.onPlayAudioEvent("r1", (event) => events.push(event));
    // SpeakerManager's call: volume may be undefined, trackId defaults to 0.
    const volume: number | undefined = undefined;
    const returned = client.playUrl({ requestId: "r1", url: "https://x/a.mp3", volume, stopOther: true, trackId: 0 });
    await waitFor(() => events.length === 3, 2000, "the events");
    assert.deepEqual(
      events.map((e) => [e.type, e.positionMs, e.durationMs]),
      [
        ["STARTED", 0, 0],
        ["PROGRESS", 250, 0],
        ["COMPLETED", 1500, 1500],
      ],
      "real types (the old client turned every one of them into FAILED)",
    );
    assert.deepEqual(legacy, [
      { type: "play_started", requestId: "r1", url: "https://x/a.mp3" },
      { type: "play_complete", requestId: "r1", success: true, durationMs: 1500, positionMs: 1500 },
    ]);
    assert.equal((await returned).type, "COMPLETED");
    const request = bridge.plays.at(-1);
    assert.equal(request?.user_id, "old-carol");
    assert.equal(request?._volume, undefined, "no volume: none sent, the bridge plays at 1.0");
    assert.equal(request?.stop_other, true);
    assert.equal(request?.track_id, 0);

    // The handler was removed after COMPLETED; a later playback of the same id reaches only a new one.
    client.playAudio({ requestId: "r1", url: "https://x/a.mp3", volume: 0 });
    await sleep(100);
    assert.equal(events.length, 3);
    assert.equal(bridge.plays.at(-1)?.volume, 0, "volume 0 is sent: it mutes (the old client played it at full volume)");
    assert.equal(bridge.plays.at(-1)?._volume, "volume");

    bridge.play = (call) => call.emit("error", { code: grpc.status.NOT_FOUND, details: "session not found" });
    const failed: PlayAudioEvent[] = [];
    client.onPlayAudioEvent("r2", (event) => failed.push(event));
    client.playAudio({ requestId: "r2", url: "https://x/b.mp3" });
    await waitFor(() => failed.length === 1, 2000, "the FAILED event");
    assert.equal(failed[0]?.type, "FAILED");
    assert.equal(failed[0]?.grpcCode, grpc.status.NOT_FOUND);
    assert.deepEqual(legacy.at(-1), {
      type: "play_complete",
      requestId: "r2",
      success: false,
      durationMs: 0,
      positionMs: 0,
      error: "PlayAudio failed: NOT_FOUND: session not found",
    });
    await client.dispose();
  });

  test("stopPlayback()/stopAudio(id) send the old requests", async () => {
    const client = oldClient(new FakeUserSession("old-dave"));
    await client.connect(roomParams("old-dave"));
    client.stopPlayback();
    await waitFor(() => bridge.stops.some((s) => s.user_id === "old-dave"), 2000, "StopAudio");
    assert.deepEqual([bridge.stops.at(-1)?.request_id, bridge.stops.at(-1)?._track_id], ["", undefined]);
    const result = await client.stopAudio("req-7");
    assert.equal(result.stoppedRequestId, "req-7");
    await client.stopPlayback("req-8");
    assert.equal(bridge.stops.at(-1)?.request_id, "req-8");
    await client.dispose();
  });

  test("getStatus() gives the old snake_case fields and, built the old way, never rejects", async () => {
    const client = oldClient(new FakeUserSession("old-erin"));
    await client.connect(roomParams("old-erin"));
    const status = await client.getStatus();
    assert.deepEqual(
      [status.connected, status.participant_id, status.participant_count, status.last_disconnect_at, status.server_version],
      [true, "PA_old-erin", 2, 1700000000123, "fake"],
    );
    assert.equal(status.participantId, status.participant_id);

    const original = bridge.statusReply;
    bridge.statusReply = () => Object.assign(new Error("gone"), { code: grpc.status.NOT_FOUND, details: "no session", metadata: new grpc.Metadata() });
    try {
      const failed = await client.getStatus();
      assert.deepEqual([failed.connected, failed.last_disconnect_reason, failed.grpcCode], [false, "rpc_error", grpc.status.NOT_FOUND]);
      const optionsClient = new LiveKitGrpcClient({ address: bridge.address, userId: "old-erin" });
      clients.push(optionsClient);
      await assert.rejects(optionsClient.getStatus(), /no session/, "the options API rejects");
    } finally {
      bridge.statusReply = original;
    }
    client.dispose();
    const disposed = await client.getStatus();
    assert.deepEqual([disposed.connected, disposed.last_disconnect_reason], [false, "client_disposed"]);
  });

  test("rejoin(params) joins again with the new token and reopens the stream; rejoin() needs something to re-join", async () => {
    const fresh = new LiveKitGrpcClient(new FakeUserSession("old-fay"), bridge.address);
    clients.push(fresh);
    await assert.rejects(fresh.rejoin(), /without params/);

    const client = oldClient(new FakeUserSession("old-gus"));
    await client.connect(roomParams("old-gus"));
    const streamsOf = (): number => bridge.firstMessages.filter((m) => m.user_id === "old-gus").length;
    await waitFor(() => streamsOf() === 1, 2000, "the first stream");
    await client.rejoin(roomParams("old-gus", "fresh-token"));
    assert.equal(bridge.joins.at(-1)?.token, "fresh-token");
    await waitFor(() => streamsOf() === 2, 2000, "the new stream");
    assert.equal(client.isConnected(), true);
    await client.rejoin(); // the current parameters
    assert.equal(bridge.joins.at(-1)?.token, "fresh-token");
    await sleep(100);
    assert.equal(client.streamCounters.unexpectedEnds, 0, "no reconnect of its own on top");
    await client.dispose();
  });

  test("dispose() returns at once, never rejects, and a disposed client refuses connect() like the old one", async () => {
    const client = oldClient(new FakeUserSession("old-hal"));
    await client.connect(roomParams("old-hal"));
    const result = client.dispose();
    assert.ok(result instanceof Promise);
    await result;
    await assert.rejects(client.connect(roomParams("old-hal")), /LiveKitGrpcClient is disposed/);
    assert.equal(client.isConnecting(), false);
    assert.equal((await client.playAudio({ requestId: "x", url: "https://x/y.mp3" })).type, "FAILED");
  });

  test("a takeover (the bridge replaced the session for another JoinRoom) makes it idle: no re-join, and dispose() leaves nobody's session", async () => {
    const session = new FakeUserSession("old-jan");
    const client = oldClient(session);
    await client.connect(roomParams("old-jan"));
    const streamIndex = (): number => bridge.firstMessages.findIndex((m) => m.user_id === "old-jan");
    await waitFor(() => streamIndex() >= 0, 2000, "the stream");
    const joins = bridge.joins.length;
    bridge.endStreamCleanly(streamIndex(), "session replaced by a new JoinRoom");
    await waitFor(() => client.streamCounters.takeovers === 1, 2000, "the takeover");
    await sleep(300);
    assert.equal(bridge.joins.length, joins, "no re-join: it would take the session back");
    assert.deepEqual([client.isConnected(), client.isConnecting()], [false, false]);
    assert.equal(client.streamCounters.reconnects, 0);
    const leaves = bridge.leaves.length;
    await client.dispose();
    assert.equal(bridge.leaves.length, leaves, "no LeaveRoom: the session belongs to the new caller");
  });

  test("clients dropped without dispose() (LiveKitManager replaces them) are garbage-collected and give their place back", async () => {
    const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
    const gc = (globalThis as { gc?: () => void }).gc ?? (bun === undefined ? undefined : () => bun.gc(true));
    assert.ok(gc !== undefined, "needs node --expose-gc (npm run test:unit passes it) or Bun");
    const channel = sharedBridgeChannel(bridge.address);
    const baseline = { load: channel.connectionLoad.reduce((a, b) => a + b, 0), listeners: channel.availability.listenerCount };
    const session = new FakeUserSession("old-kim");
    const held: LiveKitGrpcClient[] = [];
    bridge.joinReply = () => ({ success: false, error: "no room" });
    try {
      // What startBridgeSubscriber does after a failed connect: a new client, the old one dropped.
      // (In a function of its own, so no variable of this test's frame keeps the last one.)
      const failedStart = async (): Promise<void> => {
        const client = new LiveKitGrpcClient(session, bridge.address);
        held.push(client);
        await client.connect(roomParams("old-kim")).catch(() => undefined);
      };
      for (let i = 0; i < 50; i++) {
        await failedStart();
      }
    } finally {
      bridge.joinReply = () => ({ success: true, participant_id: "PA_fake", participant_count: 2 });
    }
    const load = (): number => channel.connectionLoad.reduce((a, b) => a + b, 0);
    gc();
    await sleep(20);
    assert.equal(load(), baseline.load + 50, "held clients keep their places");
    held.length = 0; // dropped, as the manager drops them
    for (let round = 0; round < 100 && (load() > baseline.load || channel.availability.listenerCount > baseline.listeners); round++) {
      gc();
      await sleep(20);
    }
    assert.equal(load(), baseline.load, "their leases were released");
    assert.equal(channel.availability.listenerCount, baseline.listeners, "their listeners were removed");
  });

  test("LIVEKIT_GRPC_SOCKET wins over the bridgeUrl argument, as before", async () => {
    const saved = process.env["LIVEKIT_GRPC_SOCKET"];
    process.env["LIVEKIT_GRPC_SOCKET"] = "/tmp/lkb-test-no-such.sock";
    try {
      const client = new LiveKitGrpcClient(new FakeUserSession("old-ida"), bridge.address);
      const channel = sharedBridgeChannel("unix:/tmp/lkb-test-no-such.sock");
      assert.deepEqual(channel.connectionLoad, [1]);
      await client.dispose();
      channel.close();
    } finally {
      if (saved === undefined) {
        delete process.env["LIVEKIT_GRPC_SOCKET"];
      } else {
        process.env["LIVEKIT_GRPC_SOCKET"] = saved;
      }
    }
  });
});
