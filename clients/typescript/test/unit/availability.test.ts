/**
 * When the bridge is away: after the channel has tried to connect for `openAfterMs`, calls fail
 * fast, the stream says "unavailable" and stops re-joining; when the bridge is back (or the cooldown
 * has passed) the client re-joins on its own. Against the in-process fake bridge, killed and
 * restarted on the same port, with short settings.
 */
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  type AvailabilityChange,
  type AvailabilityOptions,
  BridgeChannel,
  BridgeUnavailableError,
  LiveKitGrpcClient,
  type StateChange,
} from "../../src/index";
import { FakeBridge } from "../support/fake-bridge";
import { freePort, waitFor } from "../support/process";

interface Timed<T> {
  at: number;
  change: T;
}

function connectParams(userId: string) {
  return { userId, roomName: "room-1", token: "token", url: "ws://127.0.0.1:7880" };
}

/** Resolves with how long `promise` took, in ms. */
async function timed<T>(promise: Promise<T>): Promise<{ ms: number; value: T }> {
  const start = performance.now();
  const value = await promise;
  return { ms: performance.now() - start, value };
}

describe("BridgeAvailability: failing fast while the bridge is away", () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) {
      await step();
    }
  });

  async function setup(availability: AvailabilityOptions) {
    const port = await freePort();
    let bridge = await FakeBridge.start(port);
    const channel = new BridgeChannel({ address: `127.0.0.1:${port}`, availability });
    const states: Array<Timed<StateChange>> = [];
    const changes: Array<Timed<AvailabilityChange>> = [];
    channel.availability.onChange((change) => changes.push({ at: performance.now(), change }));
    const client = new LiveKitGrpcClient({
      channel,
      onStateChange: (change) => states.push({ at: performance.now(), change }),
    });
    cleanup.push(() => bridge.kill());
    cleanup.push(() => channel.close());
    cleanup.push(() => client.dispose());
    return {
      channel,
      client,
      states,
      changes,
      bridge: () => bridge,
      restart: async () => {
        bridge = await FakeBridge.start(port);
        return performance.now();
      },
    };
  }

  test("a bridge that stays away: 'unavailable' after openAfterMs, then every call answers at once", async () => {
    const h = await setup({ openAfterMs: 400, cooldownMs: 60_000, probeIntervalMs: 100 });
    await h.client.connect(connectParams("ann"));
    assert.equal(h.client.isConnected(), true);
    const killedAt = performance.now();
    h.bridge().kill();
    await waitFor(() => h.states.some((s) => s.change.state === "unavailable"), 5_000, "the unavailable state");
    const unavailable = h.states.find((s) => s.change.state === "unavailable");
    const afterMs = (unavailable?.at ?? 0) - killedAt;
    console.log(`unavailable ${afterMs.toFixed(0)} ms after the kill (openAfterMs 400), ${h.channel.availability.failedAttempts} failed attempts`);
    assert.ok(afterMs >= 350 && afterMs < 2_500, `${afterMs} ms`);
    assert.ok((unavailable?.change.retryInMs ?? 0) > 59_000, "it says how long it may fail fast");
    assert.equal(h.client.bridgeAvailable, false);
    assert.equal(h.client.isConnected(), false);
    assert.equal(h.client.isConnecting(), true, "it still means to re-join");

    const connect = await timed(h.client.connect(connectParams("ann")).then(() => undefined, (err: unknown) => err));
    assert.ok(connect.value instanceof BridgeUnavailableError, String(connect.value));
    assert.equal(connect.value.grpcCode, grpc.status.UNAVAILABLE);
    const play = await timed(h.client.playAudio({ requestId: "p1", url: "https://x/a.mp3" }));
    assert.deepEqual([play.value.type, play.value.metadata["code"], play.value.grpcCode], ["FAILED", "bridge_unavailable", grpc.status.UNAVAILABLE]);
    const stop = await timed(h.client.stopAudio());
    assert.deepEqual([stop.value.success, stop.value.grpcCode], [false, grpc.status.UNAVAILABLE]);
    const status = await timed(h.client.getStatus().then(() => undefined, (err: unknown) => err));
    assert.ok(status.value instanceof BridgeUnavailableError);
    for (const [what, ms] of [["connect", connect.ms], ["playAudio", play.ms], ["stopAudio", stop.ms], ["getStatus", status.ms]] as const) {
      assert.ok(ms < 50, `${what} answered in ${ms.toFixed(1)} ms`);
    }
    assert.equal(h.client.sendAudioChunk(Buffer.alloc(320)), false);
    // No re-join storm: while unavailable the stream does not retry.
    const rejoinsBefore = h.client.streamCounters.failedRejoins;
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(h.client.streamCounters.failedRejoins, rejoinsBefore);
  });

  test("calls already waiting for the channel are failed when the bridge turns out away, not left to their deadline", async () => {
    const h = await setup({ openAfterMs: 300, cooldownMs: 60_000, probeIntervalMs: 100 });
    h.bridge().kill();
    // connect() waits for the channel (waitForReady) and would otherwise hang until its 20 s deadline.
    const connect = await timed(h.client.connect(connectParams("bea")).then(() => undefined, (err: unknown) => err));
    assert.ok(connect.value instanceof BridgeUnavailableError, String(connect.value));
    assert.ok(connect.ms < 2_000, `connect() failed after ${connect.ms.toFixed(0)} ms`);
  });

  test("the bridge comes back: the client re-joins on its own, within a probe interval", async () => {
    const h = await setup({ openAfterMs: 300, cooldownMs: 60_000, probeIntervalMs: 200 });
    await h.client.connect(connectParams("cid"));
    h.bridge().kill();
    await waitFor(() => h.states.some((s) => s.change.state === "unavailable"), 5_000, "unavailable");
    const backAt = await h.restart();
    await waitFor(() => h.client.isConnected(), 5_000, "the re-join");
    const openAt = h.states.filter((s) => s.change.state === "open").at(-1)?.at ?? 0;
    console.log(`streaming again ${(openAt - backAt).toFixed(0)} ms after the bridge was back (probe interval 200 ms)`);
    assert.ok(openAt - backAt < 1_500, `${openAt - backAt} ms`);
    assert.equal(h.changes.at(-1)?.change.available, true);
    assert.equal(h.changes.at(-1)?.change.recoveredBy, "connected");
    assert.equal(h.bridge().joins.at(-1)?.user_id, "cid", "it joined the new bridge");
    assert.equal(h.client.bridgeAvailable, true);
    await h.client.connect(connectParams("cid")); // calls go through again
  });

  test("probeIntervalMs 0 serves the cooldown in full, then recovers on its own", async () => {
    const h = await setup({ openAfterMs: 300, cooldownMs: 1_500, probeIntervalMs: 0 });
    await h.client.connect(connectParams("dot"));
    h.bridge().kill();
    await waitFor(() => h.states.some((s) => s.change.state === "unavailable"), 5_000, "unavailable");
    const openedAt = h.changes.find((c) => !c.change.available)?.at ?? 0;
    await h.restart();
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(h.client.bridgeAvailable, false, "still in the cooldown although the bridge is back");
    assert.ok(!h.client.isConnected());
    await waitFor(() => h.client.isConnected(), 5_000, "the re-join after the cooldown");
    const recovered = h.changes.find((c) => c.change.available);
    assert.equal(recovered?.change.recoveredBy, "cooldown");
    const served = (recovered?.at ?? 0) - openedAt;
    assert.ok(served >= 1_400 && served < 2_500, `failed fast for ${served.toFixed(0)} ms`);
  });

  test("a short outage (a restart) never makes it unavailable", async () => {
    const h = await setup({ openAfterMs: 2_000, cooldownMs: 60_000, probeIntervalMs: 100 });
    await h.client.connect(connectParams("eve"));
    h.bridge().kill();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await h.restart();
    await waitFor(() => h.client.isConnected() && h.client.streamCounters.reconnects >= 1, 5_000, "the reconnect");
    await new Promise((resolve) => setTimeout(resolve, 2_200));
    assert.equal(h.changes.length, 0, "no availability change");
    assert.ok(!h.states.some((s) => s.change.state === "unavailable"));
  });
});
