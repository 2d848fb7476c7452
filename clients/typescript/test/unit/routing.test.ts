/**
 * Routing a pool (deploy/haproxy): every call carries the user id as `x-user-id`, and a NOT_FOUND for
 * the session the client holds means "moved": re-join (make-before-break), then the call once more.
 * Against the scripted in-process bridge; tests/pool runs the same behaviour through HAProxy.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { JoinRoomError, ROUTING_KEY } from "../../src/index";
import { type PlayCall, useFakeBridge } from "../support/fake-bridge";
import { waitFor } from "../support/process";

function params(userId: string) {
  return { userId, roomName: "room-1", token: "t0ken-for-routing-tests", url: "" };
}

function notFound(userId: string): grpc.ServiceError {
  return Object.assign(new Error("no session"), { code: grpc.status.NOT_FOUND, details: `no session for ${userId}`, metadata: new grpc.Metadata() });
}

describe("routing a pool: x-user-id on every call, NOT_FOUND = moved", () => {
  // The bridge, started in a before hook; newClient() makes a client on a channel to it, disposed
  // after the suite even when its test fails midway.
  const { bridge, client: newClient } = useFakeBridge();

  test("every call of a session carries the user id as x-user-id", async () => {
    assert.equal(ROUTING_KEY, "x-user-id");
    const client = newClient();
    await client.connect(params("route-1"));
    await waitFor(() => bridge.streams.length > 0, 2000, "the stream");
    await client.getStatus();
    await client.stopAudio({ requestId: "r1" });
    await client.playAudio({ requestId: "p1", url: "http://example.invalid/a.wav" });
    await client.disconnect();
    const seen = bridge.routed.filter(([, user]) => user === "route-1").map(([method]) => method);
    assert.deepEqual(new Set(seen), new Set(["JoinRoom", "StreamAudio", "GetStatus", "StopAudio", "PlayAudio", "LeaveRoom"]));
    assert.deepEqual(bridge.routed.filter(([, user]) => user !== "route-1"), [], "no call without it");
  });

  test("NOT_FOUND for the held session: re-join with the old stream still open, then the call once more", async () => {
    const client = newClient();
    await client.connect(params("moved-1"));
    await waitFor(() => bridge.firstMessages.some((m) => m.user_id === "moved-1"), 2000, "the stream");
    const joinsBefore = bridge.joins.length;
    const streamsBefore = bridge.streams.length;
    const oldStream = bridge.streams[bridge.firstMessages.findIndex((m) => m.user_id === "moved-1")];
    let oldStreamOpenAtRejoin: boolean | undefined;
    const reply = bridge.joinReply;
    bridge.joinReply = (request) => {
      oldStreamOpenAtRejoin = oldStream !== undefined && !oldStream.cancelled && !oldStream.writableEnded;
      return reply(request);
    };
    let statusCalls = 0;
    const status = bridge.statusReply;
    bridge.statusReply = (userId) => (++statusCalls === 1 ? notFound(userId) : status(userId));
    try {
      const result = await client.getStatus();
      assert.equal(result.connected, true, "the retried call's answer");
    } finally {
      bridge.joinReply = reply;
      bridge.statusReply = status;
    }
    assert.equal(statusCalls, 2, "retried once");
    assert.equal(bridge.joins.length, joinsBefore + 1, "one re-join");
    assert.equal(oldStreamOpenAtRejoin, true, "make-before-break: the old stream was open while re-joining");
    await waitFor(() => bridge.streams.length === streamsBefore + 1, 2000, "the new stream");
    assert.equal(client.isConnected(), true);
    assert.equal(client.streamCounters.handovers, 1);
    assert.equal(client.streamCounters.reconnects, 0, "no reconnect of its own on top");
    assert.deepEqual(bridge.leaves.filter((l) => l.user_id === "moved-1"), [], "no LeaveRoom: the new session is the one");
  });

  test("a draining notice on the stream: the client re-joins make-before-break, audio still arriving on the old stream", async () => {
    const heard: Buffer[] = [];
    const audioClient = newClient({ onAudio: (pcm) => heard.push(pcm) });
    await audioClient.connect(params("drain-move-1"));
    await waitFor(() => bridge.firstMessages.some((m) => m.user_id === "drain-move-1"), 2000, "the stream");
    const index = bridge.firstMessages.findIndex((m) => m.user_id === "drain-move-1");
    const oldStream = bridge.streams[index];
    assert.ok(oldStream !== undefined);
    assert.deepEqual(oldStream.metadata.get("x-bridge-notices"), ["draining"], "the client asks for the notice");
    const joinsBefore = bridge.joins.length;
    const streamsBefore = bridge.streams.length;
    let oldStreamOpenAtRejoin: boolean | undefined;
    const reply = bridge.joinReply;
    bridge.joinReply = (request) => {
      oldStreamOpenAtRejoin = !oldStream.cancelled && !oldStream.writableEnded;
      return reply(request);
    };
    try {
      oldStream.write({ pcm_data: Buffer.alloc(0), notice: "draining", user_id: "drain-move-1" });
      oldStream.write({ pcm_data: Buffer.from([1, 2]), user_id: "drain-move-1" }); // the old stream still delivers
      await waitFor(() => bridge.streams.length === streamsBefore + 1, 2000, "the new stream");
    } finally {
      bridge.joinReply = reply;
    }
    assert.equal(bridge.joins.length, joinsBefore + 1, "one re-join");
    assert.equal(oldStreamOpenAtRejoin, true, "make-before-break: the old stream was open while re-joining");
    assert.deepEqual(Buffer.concat(heard), Buffer.from([1, 2]), "the notice is not audio; the audio after it arrives");
    assert.equal(audioClient.streamCounters.handovers, 1);
    assert.equal(audioClient.streamCounters.reconnects, 0, "no reconnect of its own on top");
    assert.deepEqual(bridge.leaves.filter((l) => l.user_id === "drain-move-1"), [], "no LeaveRoom: the new session is the one");
  });

  test("a PlayAudio that finds no session plays after the re-join; only that attempt's events are reported", async () => {
    const client = newClient();
    await client.connect(params("moved-2"));
    let plays = 0;
    bridge.play = (call: PlayCall) => {
      plays += 1;
      if (plays === 1) {
        call.emit("error", notFound("moved-2"));
        return;
      }
      call.write({ type: "COMPLETED", request_id: call.request.request_id, duration_ms: 100, position_ms: 100 });
      call.end();
    };
    const events: string[] = [];
    const result = await client.playAudio({ requestId: "p2", url: "http://example.invalid/a.wav" }, (e) => events.push(e.type));
    assert.equal(result.type, "COMPLETED");
    assert.deepEqual(events, ["COMPLETED"]);
    assert.equal(plays, 2);
    assert.equal(client.streamCounters.handovers, 1);
  });

  test("the call is retried once only: a second NOT_FOUND is the answer", async () => {
    const client = newClient();
    await client.connect(params("gone-1"));
    const status = bridge.statusReply;
    bridge.statusReply = (userId) => notFound(userId);
    try {
      await assert.rejects(client.getStatus(), (err: unknown) => (err as grpc.ServiceError).code === grpc.status.NOT_FOUND);
    } finally {
      bridge.statusReply = status;
    }
    assert.equal(client.streamCounters.handovers, 1);
  });

  test("a draining bridge's UNAVAILABLE is tried again, 100 ms apart, up to 10 times in all; then it is the answer", async () => {
    const client = newClient();
    const reply = bridge.joinReply;
    const at: number[] = [];
    bridge.joinReply = () => {
      at.push(performance.now());
      return Object.assign(new Error("draining"), { code: grpc.status.UNAVAILABLE, details: "bridge draining", metadata: new grpc.Metadata() });
    };
    try {
      await assert.rejects(client.connect(params("drain-1")), /draining/);
    } finally {
      bridge.joinReply = reply;
    }
    assert.equal(at.length, 10);
    const gaps = at.slice(1).map((t, i) => t - (at[i] ?? t));
    // 100 ms apart: never sooner (timers do not fire early); the median near it, the slowest within
    // what a loaded machine adds to a timer.
    const shown = `gaps ${gaps.map((g) => g.toFixed(0)).join(" ")}`;
    const median = [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length / 2)] ?? 0;
    assert.ok(gaps.every((gap) => gap >= 99 && gap < 400) && median < 160, shown);
  });

  test("a full bridge's RESOURCE_EXHAUSTED is tried again (behind a proxy the next try goes elsewhere)", async () => {
    const client = newClient();
    const reply = bridge.joinReply;
    let joins = 0;
    bridge.joinReply = (request) => {
      joins += 1;
      if (joins === 1) {
        return Object.assign(new Error("full"), { code: grpc.status.RESOURCE_EXHAUSTED, details: "bridge full", metadata: new grpc.Metadata() });
      }
      return reply(request);
    };
    try {
      await client.connect(params("full-1"));
    } finally {
      bridge.joinReply = reply;
    }
    assert.equal(joins, 2);
    // Not every refusal: a bad token is final.
    bridge.joinReply = () => ({ success: false, error: "401" });
    try {
      await assert.rejects(client.connect({ ...params("full-1"), token: "other-t0ken" }), JoinRoomError);
    } finally {
      bridge.joinReply = reply;
    }
  });
});
