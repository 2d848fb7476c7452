/**
 * The client survives what happens to real bridges: a crash and restart (kill -9), a session ended
 * from elsewhere, and its own re-joins, all without the caller doing anything.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { BridgeUnavailableError, type StateChange } from "../../src/index";
import { sine } from "../support/audio";
import { IntegrationEnv, newRoom, startedEnv } from "../support/env";
import { sleep, waitFor } from "../support/process";
import { packetPayload } from "../support/room-driver";

interface TimedState extends StateChange {
  at: number;
}

function total(buffers: Buffer[]): number {
  return buffers.reduce((sum, buffer) => sum + buffer.length, 0);
}

describe("LiveKitGrpcClient resilience against the real bridge", () => {
  let env: IntegrationEnv | undefined;
  let startError: unknown;

  before(async () => {
    try {
      env = await IntegrationEnv.start();
    } catch (err) {
      startError = err; // every test then fails with it (a failing hook would only cancel them)
    }
  });
  after(async () => {
    await env?.close();
  });

  function ready(): IntegrationEnv {
    return startedEnv(env, startError);
  }

  test("kill -9 and restart of the bridge mid-stream: the client re-joins within 2 s and audio flows both ways again", async () => {
    const { driver, bridge } = ready();
    const user = "crash-user-1";
    const room = newRoom();
    await driver.connect("phone-c", user, room);
    await driver.connect("listener-c", "listener-c", room);
    const received: Buffer[] = [];
    const states: TimedState[] = [];
    const client = ready().client({
      onAudio: (pcm) => received.push(pcm),
      onStateChange: (change) => states.push({ ...change, at: performance.now() }),
    });
    await ready().connect(client, user, room);
    await driver.waitParticipant("phone-c", `bridge-${user}`);
    await driver.listen("listener-c", `bridge-${user}`);

    // Mid-stream: the phone talks and the cloud streams audio into the room the whole time.
    await driver.sendPackets("phone-c", 0, 10, 3200, 10);
    await waitFor(() => total(received) >= 32_000, 10_000, "audio before the crash");
    let sending = true;
    let sentOk = 0;
    let dropped = 0;
    const tone = sine(440, 0.1, 16000); // 44 whole cycles: repeating it gives one continuous tone
    const sender = (async () => {
      while (sending) {
        if (client.sendAudioChunk(tone)) {
          sentOk += 1;
        } else {
          dropped += 1;
        }
        await sleep(100);
      }
    })();

    const killedAt = performance.now();
    await bridge.kill();
    await waitFor(() => states.some((s) => s.state === "reconnecting" && s.at >= killedAt), 5_000, "the client to notice");
    await bridge.restart();
    await waitFor(() => states.some((s) => s.state === "open" && s.at >= bridge.readyAt), 5_000, "the client to re-join");
    const openAt = states.find((s) => s.state === "open" && s.at >= bridge.readyAt)?.at ?? 0;
    const afterRestart = openAt - bridge.readyAt;
    console.log(
      `reconnect: stream open again ${afterRestart.toFixed(0)} ms after the restarted bridge listened ` +
        `(${(openAt - killedAt).toFixed(0)} ms after the kill; bridge restart took ${(bridge.readyAt - killedAt).toFixed(0)} ms)`,
    );
    assert.ok(afterRestart < 2_000, `re-joined ${afterRestart.toFixed(0)} ms after the bridge came back`);
    assert.ok(client.streamCounters.reconnects >= 1);
    assert.equal(client.isConnected(), true);
    const status = await client.getStatus();
    assert.equal(status.connected, true, "the new bridge process has the session, in its room");

    // Room -> cloud on the new session, into the same callback. A phone's first packets to a new
    // participant can precede its subscription: send for a while, check what arrives is what was sent.
    received.length = 0;
    await driver.sendPackets("phone-c", 100, 40, 3200, 50);
    await waitFor(() => received.length >= 5, 10_000, "phone audio after the restart");
    const sent = new Set(Array.from({ length: 40 }, (_, i) => packetPayload(100 + i, 3200).toString("hex")));
    assert.ok(received.every((pcm) => sent.has(pcm.toString("hex"))), "only the phone's packets, intact");

    // Cloud -> room on the new session: the listener hears the new bridge's speaker track.
    await driver.forget("listener-c");
    let heard = await driver.heard("listener-c", "speaker");
    for (let i = 0; i < 50 && heard.loud_ms < 500; i++) {
      await sleep(200);
      heard = await driver.heard("listener-c", "speaker");
    }
    sending = false;
    await sender;
    assert.ok(heard.loud_ms >= 500, `${heard.loud_ms} ms of the cloud's tone heard after the restart`);
    assert.ok(Math.abs(heard.dominant_hz - 440) < 5, `${heard.dominant_hz} Hz heard`);
    assert.ok(dropped > 0, "chunks sent during the outage were dropped, not queued");
    assert.ok(sentOk > 0);
    await client.dispose();
    await driver.disconnect("phone-c");
    await driver.disconnect("listener-c");
  });

  test("a session ended from elsewhere (LeaveRoom by another caller) is re-joined; the clean end reason is reported", async () => {
    const { channel } = ready();
    const user = "left-user-1";
    const states: TimedState[] = [];
    const client = ready().client({ onStateChange: (change) => states.push({ ...change, at: performance.now() }) });
    await ready().connect(client, user, newRoom());
    await sleep(200); // the stream is attached on the bridge

    const left = await new Promise<{ success: boolean }>((resolve, reject) =>
      channel.stub.leaveRoom({ user_id: user, reason: "operator" }, (err, response) =>
        err || response === undefined ? reject(err ?? new Error("LeaveRoom: no response")) : resolve(response),
      ),
    );
    assert.equal(left.success, true);
    await waitFor(() => states.filter((s) => s.state === "open").length >= 2, 5_000, "the re-join");
    const reconnecting = states.find((s) => s.state === "reconnecting");
    assert.equal(reconnecting?.end?.code, 0, "the bridge ended the stream with OK");
    assert.match(reconnecting?.end?.endReason ?? "", /left/, "with x-bridge-end-reason");
    assert.equal((await client.getStatus()).connected, true);
    await client.dispose();
  });

  test("its own re-join does not flap: connect() again replaces the stream, and the old stream's end is ignored", async () => {
    const user = "rejoin-user-1";
    const room = newRoom();
    const client = ready().client();
    await ready().connect(client, user, room);
    await sleep(200);
    await ready().connect(client, user, room); // the bridge replaces the session and ends the old stream with OK
    await sleep(1_500);
    assert.equal(client.streamCounters.unexpectedEnds, 0, "the superseded stream's end did not trigger a reconnect");
    assert.equal(client.streamCounters.reconnects, 0);
    assert.equal(client.streamCounters.callsOpened, 2);
    assert.equal(client.isConnected(), true);
    assert.equal((await client.getStatus()).connected, true);
    await client.dispose();
  });

  test("a bridge that stays away: after openAfterMs (default 5 s) calls fail fast and the state says so; it recovers on its own", async () => {
    const { bridge, channel } = ready();
    const user = "away-user-1";
    const states: TimedState[] = [];
    const client = ready().client({ onStateChange: (change) => states.push({ ...change, at: performance.now() }) });
    await ready().connect(client, user, newRoom());
    const openAfterMs = channel.availability.openAfterMs;

    const killedAt = performance.now();
    await bridge.kill();
    await waitFor(() => states.some((s) => s.state === "unavailable"), openAfterMs + 5_000, "the unavailable state");
    const unavailableAt = states.find((s) => s.state === "unavailable")?.at ?? 0;
    assert.ok(unavailableAt - killedAt >= openAfterMs - 100, `unavailable ${unavailableAt - killedAt} ms after the kill`);

    const started = performance.now();
    const play = await client.playAudio({ requestId: "away-1", url: "http://127.0.0.1:1/x.wav" });
    const stop = await client.stopAudio();
    const connect = await client.connect({ userId: user, roomName: "r", token: "t", url: "" }).then(
      () => "joined",
      (err: unknown) => (err instanceof BridgeUnavailableError ? "unavailable" : String(err)),
    );
    const failFastMs = performance.now() - started;
    assert.deepEqual([play.metadata["code"], stop.success, connect], ["bridge_unavailable", false, "unavailable"]);
    assert.ok(failFastMs < 100, `three calls answered in ${failFastMs.toFixed(1)} ms`);

    await bridge.restart();
    await waitFor(() => client.isConnected(), channel.availability.probeIntervalMs + 5_000, "the re-join");
    const openAt = states.filter((s) => s.state === "open").at(-1)?.at ?? 0;
    console.log(
      `bridge away: unavailable ${(unavailableAt - killedAt).toFixed(0)} ms after the kill (openAfterMs ${openAfterMs}); ` +
        `3 calls answered in ${failFastMs.toFixed(1)} ms; streaming again ${(openAt - bridge.readyAt).toFixed(0)} ms after ` +
        `the bridge was back (probe every ${channel.availability.probeIntervalMs} ms)`,
    );
    assert.ok(openAt - bridge.readyAt < channel.availability.probeIntervalMs + 2_000);
    assert.equal((await client.getStatus()).connected, true);
    await client.dispose();
  });
});
