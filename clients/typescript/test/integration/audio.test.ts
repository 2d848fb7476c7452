/**
 * The client against the real Python bridge (a child process) and a real LiveKit server with real
 * participants (test/support/room_driver.py). Nothing is faked and nothing leaves 127.0.0.1.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { BridgeChannel, JoinRoomError, LiveKitGrpcClient, type PlayAudioEvent } from "../../src/index";
import { chunks, sine, sineRms, writeWav } from "../support/audio";
import { BridgeProcess } from "../support/bridge-process";
import { IntegrationEnv, newRoom, startedEnv } from "../support/env";
import { sleep, waitFor, within } from "../support/process";
import { type Heard, packetPayload } from "../support/room-driver";

const RATE = 16000;

function total(buffers: Buffer[]): number {
  return buffers.reduce((sum, buffer) => sum + buffer.length, 0);
}

/** Sends `pcm` in 100 ms chunks at real-time pace (what the cloud does), on `trackId`. */
async function streamRealtime(send: (chunk: Buffer) => boolean, pcm: Buffer): Promise<number> {
  const started = performance.now();
  let accepted = 0;
  for (const [index, chunk] of chunks(pcm, RATE / 10 * 2).entries()) {
    await sleep(Math.max(0, started + index * 100 - performance.now()));
    accepted += send(chunk) ? 1 : 0;
  }
  return accepted;
}

interface TimedEvent extends PlayAudioEvent {
  at: number;
}

describe("LiveKitGrpcClient with the real bridge and a real LiveKit server", () => {
  let env: IntegrationEnv | undefined;
  let startError: unknown;
  let media = "";
  let mediaUrl = "";

  before(async () => {
    try {
      env = await IntegrationEnv.start();
      media = mkdtempSync(path.join(os.tmpdir(), "lkb-client-media-"));
      writeWav(path.join(media, "tone-660-1500ms.wav"), sine(660, 1.5, RATE), RATE);
      writeWav(path.join(media, "tone-330-6s.wav"), sine(330, 6, RATE), RATE);
      writeWav(path.join(media, "tone-550-6s.wav"), sine(550, 6, RATE), RATE);
      mediaUrl = await env.driver.serveDir(media);
    } catch (err) {
      startError = err; // every test then fails with it (a failing hook would only cancel them)
    }
  });

  after(async () => {
    try {
      await env?.close();
    } finally {
      if (media) {
        rmSync(media, { recursive: true, force: true });
      }
    }
  });

  function ready(): IntegrationEnv {
    return startedEnv(env, startError);
  }

  /** Polls what the listener heard on `track` until `enough` holds (bounded). */
  async function hear(name: string, track: string, enough: (heard: Heard) => boolean, timeoutMs = 15_000): Promise<Heard> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const heard = await ready().driver.heard(name, track);
      if (enough(heard) || Date.now() > deadline) {
        return heard;
      }
      await sleep(200);
    }
  }

  test("the phone's data packets reach onAudio byte-exact and in order (sequence bytes stripped)", async () => {
    const { driver } = ready();
    const user = "phone-user-1";
    const room = newRoom();
    await driver.connect("phone-1", user, room);
    const received: Buffer[] = [];
    const client = ready().client({ onAudio: (pcm) => received.push(pcm) });
    await ready().connect(client, user, room);
    await driver.waitParticipant("phone-1", `bridge-${user}`);

    // Sequence numbers 240..279 wrap past 255.
    const first = 240;
    const count = 40;
    await driver.sendPackets("phone-1", first, count, 3200, 10);
    const expected = Buffer.concat(Array.from({ length: count }, (_, i) => packetPayload(first + i, 3200)));
    await waitFor(() => total(received) >= expected.length, 10_000, "all of the phone's PCM");
    assert.ok(Buffer.concat(received).equals(expected), "PCM arrives byte-exact, in order, without sequence bytes");
    await client.dispose();
    await driver.disconnect("phone-1");
  });

  test("paced: the phone's audio comes out in 100 ms frames at a steady cadence, nothing lost", async () => {
    const { driver } = ready();
    const user = "phone-user-2";
    const room = newRoom();
    await driver.connect("phone-2", user, room);
    const frames: Array<{ at: number; pcm: Buffer }> = [];
    const client = ready().client({
      pacing: { mode: "paced" },
      onAudio: (pcm) => frames.push({ at: performance.now(), pcm }),
    });
    await ready().connect(client, user, room);
    await driver.waitParticipant("phone-2", `bridge-${user}`);

    const count = 15;
    await driver.sendPackets("phone-2", 0, count, 3200, 100);
    const expected = Buffer.concat(Array.from({ length: count }, (_, i) => packetPayload(i, 3200)));
    await waitFor(() => total(frames.map((f) => f.pcm)) >= expected.length, 10_000, "all frames");
    assert.ok(Buffer.concat(frames.map((f) => f.pcm)).equals(expected));
    assert.ok(frames.every((f) => f.pcm.length === 3200), "every frame is 100 ms");
    const gaps = frames.slice(1).map((f, i) => f.at - (frames[i]?.at ?? 0));
    const sorted = [...gaps].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)] ?? 0;
    assert.ok(median > 90 && median < 110, `median spacing ${median.toFixed(1)} ms (${gaps.map((g) => g.toFixed(0)).join(",")})`);
    assert.ok(Math.max(...gaps) < 170, `no frame came late by more than a period: ${gaps.map((g) => g.toFixed(0)).join(",")}`);
    assert.equal(client.pacerCounters.droppedBytes, 0);
    await client.dispose();
    await driver.disconnect("phone-2");
  });

  test("audio the client streams reaches a listener in the room, on the track it names", async () => {
    const { driver } = ready();
    const user = "cloud-user-1";
    const room = newRoom();
    await driver.connect("listener-1", "listener-1", room);
    const client = ready().client();
    await ready().connect(client, user, room);
    await driver.listen("listener-1", `bridge-${user}`);

    const low = sine(440, 2, RATE);
    const high = chunks(sine(880, 2, RATE), 3200);
    let index = 0;
    const accepted = await streamRealtime((chunk) => {
      const a = client.sendAudioChunk(chunk); // track 0: speaker
      const b = client.sendAudioChunk(high[index++] ?? Buffer.alloc(0), 2); // tts
      return a && b;
    }, low);
    assert.equal(accepted, 20, "no chunk was dropped");
    for (const [track, freq] of [
      ["speaker", 440],
      ["tts", 880],
    ] as const) {
      const heard = await hear("listener-1", track, (h) => h.loud_ms >= 1700);
      assert.ok(heard.loud_ms >= 1700 && heard.loud_ms <= 2200, `${track}: ${heard.loud_ms} ms of tone heard`);
      assert.ok(Math.abs(heard.dominant_hz - freq) < 5, `${track}: ${heard.dominant_hz} Hz, expected ${freq}`);
      assert.ok(heard.rms > 0.6 * sineRms(0.5), `${track}: level ${heard.rms}`);
    }
    await client.dispose();
    await driver.disconnect("listener-1");
  });

  test("playAudio of a local WAV: STARTED, PROGRESS..., COMPLETED, after the audio played, and the room hears it", async () => {
    const { driver } = ready();
    const user = "play-user-1";
    const room = newRoom();
    await driver.connect("listener-2", "listener-2", room);
    const client = ready().client();
    await ready().connect(client, user, room);
    await driver.listen("listener-2", `bridge-${user}`);

    const events: TimedEvent[] = [];
    const done = await within(
      client.playAudio({ requestId: "play-wav-1", url: `${mediaUrl}/tone-660-1500ms.wav` }, (event) =>
        events.push({ ...event, at: performance.now() }),
      ),
      20_000,
      "PlayAudio to finish",
    );
    assert.equal(done.type, "COMPLETED", `terminal event: ${done.type} ${done.error ?? ""}`);
    const types = events.map((e) => e.type);
    assert.match(types.join(" "), /^STARTED( PROGRESS)+ COMPLETED$/, types.join(" "));
    assert.ok(events.every((e) => e.requestId === "play-wav-1"));
    const positions = events.map((e) => e.positionMs);
    assert.deepEqual(positions, [...positions].sort((a, b) => a - b), "positions never go back");
    assert.ok(Math.abs(done.durationMs - 1500) <= 100, `duration ${done.durationMs} ms is the audio's length`);
    assert.deepEqual(
      [...new Set(events.slice(0, -1).map((e) => e.durationMs))],
      [1500],
      "STARTED and PROGRESS carry the length the WAV header states",
    );
    const started = events[0]?.at ?? 0;
    const completed = events.at(-1)?.at ?? 0;
    assert.ok(completed - started >= 1300, `COMPLETED ${Math.round(completed - started)} ms after STARTED: not before it played`);

    const heard = await hear("listener-2", "speaker", (h) => h.loud_ms >= 1300);
    assert.ok(heard.loud_ms >= 1300, `${heard.loud_ms} ms heard`);
    assert.ok(Math.abs(heard.dominant_hz - 660) < 5, `${heard.dominant_hz} Hz heard, expected 660`);
    await client.dispose();
    await driver.disconnect("listener-2");
  });

  test("stopAudio stops a playback by request id, and by track", async () => {
    const client = ready().client();
    const user = "stop-user-1";
    await ready().connect(client, user, newRoom());

    const byId: PlayAudioEvent[] = [];
    const started = performance.now();
    const first = client.playAudio({ requestId: "play-long-1", url: `${mediaUrl}/tone-330-6s.wav` }, (e) => byId.push(e));
    await waitFor(() => byId.some((e) => e.type === "STARTED") || byId.some((e) => e.type === "FAILED"), 10_000, "STARTED");
    assert.equal(byId[0]?.type, "STARTED", `first event: ${byId[0]?.type} ${byId[0]?.error ?? ""}`);
    await sleep(300);
    const stopped = await client.stopAudio({ requestId: "play-long-1" });
    assert.equal(stopped.success, true, stopped.error);
    assert.equal(stopped.stoppedRequestId, "play-long-1");
    const end = await within(first, 3_000, "the stopped playback's terminal event");
    assert.equal(end.type, "FAILED", "a stopped playback did not complete");
    assert.ok(performance.now() - started < 5_000, "it ended long before the 6 s file would have");

    const byTrack: PlayAudioEvent[] = [];
    const second = client.playAudio({ requestId: "play-tts-1", url: `${mediaUrl}/tone-550-6s.wav`, trackId: 2 }, (e) =>
      byTrack.push(e),
    );
    await waitFor(() => byTrack.length > 0, 10_000, "the second playback to start");
    assert.equal(byTrack[0]?.type, "STARTED", `first event: ${byTrack[0]?.type} ${byTrack[0]?.error ?? ""}`);
    const stoppedTrack = await client.stopAudio({ trackId: 2 });
    assert.equal(stoppedTrack.success, true, stoppedTrack.error);
    assert.equal(stoppedTrack.stoppedRequestId, "play-tts-1");
    assert.equal((await within(second, 3_000, "terminal event")).type, "FAILED");
    await client.dispose();
  });

  test("a join the bridge cannot complete (bad token) rejects with its readable error", async () => {
    const client = ready().client();
    await assert.rejects(
      client.connect({ userId: "bad-token-user", roomName: newRoom(), token: "not-a-valid-jwt", url: ready().driver.url }),
      (err: unknown) => {
        assert.ok(err instanceof JoinRoomError, String(err));
        assert.equal(err.grpcCode, undefined, "success=false, not a gRPC error");
        assert.ok(err.message.length > 0);
        return true;
      },
    );
    assert.equal(client.isConnected(), false);
    await client.dispose();
  });

  test("a bridge that requires a bearer token accepts the client's token and refuses calls without it", async () => {
    const { driver } = ready();
    const secret = "client-test-shared-secret-0123456789";
    const secured = await BridgeProcess.start({ livekitUrl: driver.url, env: { BRIDGE_AUTH_TOKEN: secret } });
    const withToken = new BridgeChannel({ address: secured.address, authToken: secret });
    const without = new BridgeChannel({ address: secured.address, authToken: "" });
    try {
      const room = newRoom();
      const params = async (userId: string) => ({
        userId,
        roomName: room,
        token: await driver.token(`bridge-${userId}`, room),
        url: driver.url,
      });
      const allowed = new LiveKitGrpcClient({ channel: withToken });
      await allowed.connect(await params("auth-user-1"));
      assert.equal((await allowed.getStatus()).connected, true);
      await allowed.dispose();

      const refused = new LiveKitGrpcClient({ channel: without });
      await assert.rejects(refused.connect(await params("auth-user-2")), (err: unknown) => {
        assert.ok(err instanceof JoinRoomError, String(err));
        assert.equal(err.grpcCode, grpc.status.UNAUTHENTICATED);
        return true;
      });
      await refused.dispose();
    } finally {
      withToken.close();
      without.close();
      await secured.stop();
    }
  });

  test("one channel carries more sessions than one HTTP/2 connection of the bridge allows", async () => {
    const { channel } = ready();
    const leases = Array.from({ length: 110 }, () => channel.acquire());
    const calls: Array<{ cancel(): void }> = [];
    try {
      for (const lease of leases) {
        const call = lease.stub.streamAudio();
        call.on("error", () => undefined);
        calls.push(call);
      }
      assert.ok(channel.connectionLoad.length >= 3, `connections: ${channel.connectionLoad.join(",")}`);
      await sleep(300);
      const health = await channel.healthCheck(3_000);
      assert.equal(health.status, "SERVING");
    } finally {
      for (const call of calls) {
        call.cancel();
      }
      for (const lease of leases) {
        lease.release();
      }
    }
  });
});
