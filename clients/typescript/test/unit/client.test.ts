import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  BridgeChannel,
  ClientDisposedError,
  JoinRoomError,
  LiveKitGrpcClient,
  type Logger,
  type PlayAudioEvent,
  type StateChange,
} from "../../src/index";
import { activeTimers } from "../support/fake-call";
import { type PlayCall, type StreamCall, useFakeBridge } from "../support/fake-bridge";
import { sleep, waitFor } from "../support/process";

const TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-token-that-must-never-be-logged.sig";

/** A logger that keeps every record, to check what the client logs (and what it never logs). */
function capturingLogger(): { logger: Logger; text: () => string } {
  const records: unknown[] = [];
  const log = (fields: Record<string, unknown>, message?: string): void => {
    records.push({ fields, message });
  };
  return { logger: { debug: log, info: log, warn: log, error: log }, text: () => JSON.stringify(records) };
}

function connectParams(userId: string) {
  return { userId, roomName: "room-1", token: TOKEN, url: "ws://127.0.0.1:7880" };
}

describe("LiveKitGrpcClient against a scripted in-process bridge", () => {
  // The bridge, started in a before hook; newClient() makes a client on a channel to it, disposed
  // after the suite even when its test fails midway.
  const { bridge, client: newClient } = useFakeBridge();

  test("connect() joins with target_identity = userId, then opens the stream with the naming message", async () => {
    const client = newClient();
    const result = await client.connect(connectParams("alice"));
    assert.deepEqual(result, { participantId: "PA_fake", participantCount: 2, metadata: {} });
    const join = bridge.joins.at(-1);
    assert.equal(join?.user_id, "alice");
    assert.equal(join?.target_identity, "alice");
    assert.equal(join?.token, TOKEN);
    assert.equal(join?.livekit_url, "ws://127.0.0.1:7880");
    await waitFor(() => bridge.firstMessages.some((m) => m.user_id === "alice"), 2000, "the stream");
    const first = bridge.firstMessages.find((m) => m.user_id === "alice");
    assert.equal(first?.pcm_data.length, 0);
    assert.equal(first?.sample_rate, 16000);
    assert.equal(first?.channels, 1);
    assert.equal(client.isConnected(), true);
    await client.dispose();
  });

  test("a join the bridge refuses (success=false) rejects with its error text, and nothing keeps running", async () => {
    const { logger, text } = capturingLogger();
    // A bridge that quoted the token back (the old one did) must not get it into the cloud's logs.
    bridge.joinReply = (request) => ({ success: false, error: `could not connect to LiveKit: 401 invalid token ${request.token}` });
    const timers = activeTimers();
    try {
      const client = newClient({ logger });
      await assert.rejects(client.connect(connectParams("bob")), (err: unknown) => {
        assert.ok(err instanceof JoinRoomError);
        assert.equal(err.message, "could not connect to LiveKit: 401 invalid token [token]");
        assert.equal(err.grpcCode, undefined);
        return true;
      });
      assert.equal(client.isConnected(), false);
      await sleep(50);
      assert.equal(bridge.firstMessages.filter((m) => m.user_id === "bob").length, 0, "no stream without a session");
      assert.equal(activeTimers(), timers, "no reconnect loop after a failed connect()");
      assert.ok(!text().includes("secret-token"), "the token is never logged");
      await client.dispose();
    } finally {
      bridge.joinReply = () => ({ success: true, participant_id: "PA_fake", participant_count: 2 });
    }
  });

  test("a stream the bridge ends cleanly (OK + end reason) is re-joined and reopened without the caller", async () => {
    const { logger, text } = capturingLogger();
    const states: StateChange[] = [];
    const client = newClient({ logger, onStateChange: (s) => states.push(s) });
    await client.connect(connectParams("carol"));
    await waitFor(() => bridge.streams.length > 0 && bridge.firstMessages.at(-1)?.user_id === "carol", 2000, "stream");
    const joinsBefore = bridge.joins.filter((j) => j.user_id === "carol").length;
    bridge.endStreamCleanly(bridge.streams.length - 1, "session left: LeaveRoom");
    await waitFor(() => bridge.firstMessages.filter((m) => m.user_id === "carol").length === 2, 3000, "the second stream");
    assert.equal(bridge.joins.filter((j) => j.user_id === "carol").length, joinsBefore + 1, "it re-joined first");
    const reconnecting = states.find((s) => s.state === "reconnecting");
    assert.equal(reconnecting?.end?.endReason, "session left: LeaveRoom");
    assert.ok(!text().includes("secret-token"), "the token is never logged, on reconnects either");
    await client.dispose();
  });

  test("ten bridge-ended streams in a row: ten re-joins, and the process holds no more timers than before", async () => {
    const client = newClient({ reconnect: { initialMs: 1, maxMs: 2 } });
    await client.connect(connectParams("ivan"));
    const streamsOf = (): number => bridge.firstMessages.filter((m) => m.user_id === "ivan").length;
    await waitFor(() => streamsOf() === 1, 2000, "the first stream");
    await sleep(50);
    const timers = activeTimers();
    for (let cycle = 1; cycle <= 10; cycle++) {
      bridge.endStreamCleanly(bridge.streams.length - 1, `superseded ${cycle}`);
      await waitFor(() => streamsOf() === cycle + 1 && client.isConnected(), 3000, `reconnect ${cycle}`);
    }
    await sleep(50);
    assert.equal(client.streamCounters.reconnects, 10);
    assert.equal(client.streamCounters.unexpectedEnds, 10);
    assert.ok(activeTimers() <= timers, `timers: ${timers} before, ${activeTimers()} after`);
    await client.dispose();
  });

  test("playAudio: typed events in order, promise of the terminal event, optional fields only when given", async () => {
    bridge.play = (call: PlayCall) => {
      const id = call.request.request_id;
      call.write({ type: "STARTED", request_id: id, duration_ms: 1500 });
      call.write({ type: "PROGRESS", request_id: id, duration_ms: 1500, position_ms: 250 });
      call.write({ type: "PROGRESS", request_id: id, duration_ms: 1500, position_ms: 500 });
      call.write({ type: "COMPLETED", request_id: id, duration_ms: 1500, position_ms: 1500 });
      call.end();
    };
    const client = newClient();
    await client.connect(connectParams("dave"));
    const events: PlayAudioEvent[] = [];
    const done = await client.playAudio({ requestId: "p1", url: "https://x/a.mp3", volume: 0, trackId: 2 }, (e) =>
      events.push(e),
    );
    assert.deepEqual(
      events.map((e) => [e.type, e.positionMs]),
      [
        ["STARTED", 0],
        ["PROGRESS", 250],
        ["PROGRESS", 500],
        ["COMPLETED", 1500],
      ],
    );
    assert.equal(done, events.at(-1));
    assert.equal(done.durationMs, 1500);
    assert.equal(typeof done.durationMs, "number");
    const muted = bridge.plays.at(-1);
    assert.equal(muted?.volume, 0, "an explicit volume 0 is sent (mute)");
    assert.equal(muted?._volume, "volume");
    assert.equal(muted?.track_id, 2);
    assert.equal(muted?.user_id, "dave");

    await client.playAudio({ requestId: "p2", url: "https://x/b.mp3" });
    const plain = bridge.plays.at(-1);
    assert.equal(plain?.volume, undefined, "no volume given: none sent (the bridge plays at 1.0)");
    assert.equal(plain?._volume, undefined);
    assert.equal(plain?.stop_other, false);
    await client.dispose();
  });

  test("playAudio: durationMs on STARTED and PROGRESS is the bridge's duration_ms (the length the file states, else 0), as a number", async () => {
    // What the bridge sends: the length the file states from the start (a WAV header, an MP3's
    // Xing/Info frame), 0 until COMPLETED when it states none. int64 arrives as a decimal string (longs: String).
    const lengths: Record<string, { stated: string; played: string }> = {
      "states-its-length": { stated: "2500", played: "2500" },
      "states-none": { stated: "0", played: "1800" },
    };
    bridge.play = (call: PlayCall) => {
      const id = call.request.request_id;
      const { stated, played } = lengths[id] ?? { stated: "0", played: "0" };
      call.write({ type: "STARTED", request_id: id, duration_ms: stated });
      call.write({ type: "PROGRESS", request_id: id, duration_ms: stated, position_ms: "100" });
      call.write({ type: "COMPLETED", request_id: id, duration_ms: played, position_ms: played });
      call.end();
    };
    const client = newClient();
    await client.connect(connectParams("olga"));
    const durations = async (requestId: string): Promise<Array<[string, unknown]>> => {
      const events: PlayAudioEvent[] = [];
      await client.playAudio({ requestId, url: `https://x/${requestId}` }, (e) => events.push(e));
      return events.map((e) => [e.type, e.durationMs]);
    };
    assert.deepEqual(await durations("states-its-length"), [
      ["STARTED", 2500],
      ["PROGRESS", 2500],
      ["COMPLETED", 2500],
    ]);
    assert.deepEqual(await durations("states-none"), [
      ["STARTED", 0],
      ["PROGRESS", 0],
      ["COMPLETED", 1800],
    ]);
    await client.dispose();
  });

  test("playAudio on a bridge error reports exactly one FAILED with the gRPC code and resolves", async () => {
    bridge.play = (call) => call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: "not yet" });
    const client = newClient();
    await client.connect(connectParams("erin"));
    const events: PlayAudioEvent[] = [];
    const done = await client.playAudio({ requestId: "p3", url: "https://x/c.wav" }, (e) => events.push(e));
    assert.equal(events.length, 1);
    assert.equal(done.type, "FAILED");
    assert.equal(done.grpcCode, grpc.status.UNIMPLEMENTED);
    assert.match(done.error ?? "", /UNIMPLEMENTED: not yet/);

    bridge.play = (call) => {
      call.write({ type: "STARTED", request_id: "p4" });
      call.end(); // ends without COMPLETED/FAILED
    };
    const early = await client.playAudio({ requestId: "p4", url: "https://x/d.wav" });
    assert.equal(early.type, "FAILED");
    assert.equal(early.grpcCode, grpc.status.OK);
    await client.dispose();
  });

  test("stopAudio sends track_id only when given (track 0 is a real track) and accepts the old string form", async () => {
    const client = newClient();
    await client.connect(connectParams("frank"));
    const byTrack = await client.stopAudio({ trackId: 0 });
    assert.equal(byTrack.success, true);
    assert.equal(bridge.stops.at(-1)?.track_id, 0);
    assert.equal(bridge.stops.at(-1)?._track_id, "track_id");

    const byId = await client.stopAudio("req-9");
    assert.equal(byId.stoppedRequestId, "req-9");
    assert.equal(bridge.stops.at(-1)?.request_id, "req-9");
    assert.equal(bridge.stops.at(-1)?._track_id, undefined);

    await client.stopAudio();
    assert.deepEqual(
      [bridge.stops.at(-1)?.request_id, bridge.stops.at(-1)?.track_id, bridge.stops.at(-1)?.user_id],
      ["", undefined, "frank"],
    );
    await client.dispose();
  });

  test("getStatus() reads int64 as a number and adds the stream's state", async () => {
    const client = newClient();
    await client.connect(connectParams("gina"));
    const status = await client.getStatus();
    assert.equal(status.lastDisconnectAt, 1700000000123);
    assert.equal(status.participantId, "PA_gina");
    assert.equal(status.stream, "open");
    await client.dispose();
  });

  test("dispose() is idempotent, leaves once, resolves pending playbacks, and leaves no timer behind", async () => {
    const timers = activeTimers();
    bridge.play = () => undefined; // never answers
    const client = newClient({ pacing: { mode: "paced" } });
    await client.connect(connectParams("hank"));
    const playing = client.playAudio({ requestId: "p5", url: "https://x/e.wav" });
    const leavesBefore = bridge.leaves.length;
    const first = client.dispose();
    assert.equal(client.dispose(), first, "the same promise every time");
    await first;
    assert.equal(bridge.leaves.length, leavesBefore + 1);
    assert.equal(bridge.leaves.at(-1)?.user_id, "hank");
    const ended = await playing;
    assert.equal(ended.type, "FAILED");
    assert.equal(ended.grpcCode, grpc.status.CANCELLED);
    await assert.rejects(client.connect(connectParams("hank")), ClientDisposedError);
    assert.equal(client.sendAudioChunk(Buffer.alloc(320)), false);
    await sleep(20);
    assert.equal(activeTimers(), timers);
  });

  test("disconnect(): one LeaveRoom, the stream ends, no re-join, buffered room audio handed on; connect() afterwards joins and streams again", async () => {
    const heard: Buffer[] = [];
    // A jitter delay far beyond the test: room audio stays in the pacer until disconnect() flushes it.
    const client = newClient({ pacing: { mode: "paced", jitterMs: 60_000 }, onAudio: (pcm) => heard.push(Buffer.from(pcm)) });
    await client.connect(connectParams("paul"));
    const streamsOf = (): StreamCall[] => bridge.streams.filter((_, i) => bridge.firstMessages[i]?.user_id === "paul");
    await waitFor(() => streamsOf().length === 1, 2000, "the stream");
    const first = streamsOf()[0];
    let firstCancelled = false;
    first?.on("cancelled", () => {
      firstCancelled = true;
    });
    first?.write({ pcm_data: Buffer.alloc(640, 7), sample_rate: 16000, channels: 1, user_id: "paul" });
    await waitFor(() => client.pacerCounters.bytesIn === 640, 2000, "room audio in the pacer");
    assert.equal(heard.length, 0, "held by the jitter delay");
    const joins = (): number => bridge.joins.filter((j) => j.user_id === "paul").length;
    const leaves = (): number => bridge.leaves.filter((l) => l.user_id === "paul").length;

    await client.disconnect();
    assert.equal(leaves(), 1, "one LeaveRoom");
    assert.equal(Buffer.concat(heard).length, 640, "the pacer was flushed");
    assert.equal(client.isConnected(), false);
    assert.equal(client.isConnecting(), false, "no re-join scheduled");
    assert.equal(client.sendAudioChunk(Buffer.alloc(320)), false, "no streaming");
    await waitFor(() => firstCancelled, 2000, "the bridge to see the stream end");
    assert.equal(client.streamCounters.unexpectedEnds, 0, "its own end is not taken for a lost stream");
    assert.equal(joins(), 1);

    await client.connect(connectParams("paul"));
    assert.equal(joins(), 2, "connect() after disconnect() joins again");
    await waitFor(() => streamsOf().length === 2, 2000, "a new stream");
    const received: Buffer[] = [];
    streamsOf()[1]?.on("data", (chunk: { pcm_data: Buffer }) => received.push(chunk.pcm_data));
    assert.equal(client.sendAudioChunk(Buffer.alloc(320, 3)), true);
    await waitFor(() => received.length === 1, 2000, "audio on the new stream");
    assert.deepEqual(received[0], Buffer.alloc(320, 3));
    assert.equal(leaves(), 1, "nothing left on the way back in");
    await client.dispose();
  });

  test("sessions share connections, a new one opening only when one is full", async () => {
    const small = new BridgeChannel({ address: bridge.address, maxSessionsPerConnection: 2 });
    try {
      const clients = Array.from({ length: 5 }, () => new LiveKitGrpcClient({ channel: small }));
      assert.deepEqual(small.connectionLoad, [2, 2, 1]);
      await clients[0]?.dispose();
      await clients[1]?.dispose();
      assert.deepEqual(small.connectionLoad, [0, 2, 1], "a disposed client gives its place back");
      clients.push(new LiveKitGrpcClient({ channel: small }));
      assert.deepEqual(small.connectionLoad, [1, 2, 1], "the least loaded connection is reused");
      await Promise.all(clients.map((client) => client.dispose()));
      assert.deepEqual(small.connectionLoad, [0, 0, 0]);
    } finally {
      small.close();
    }
  });
});
