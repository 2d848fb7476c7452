import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { status as Status } from "@grpc/grpc-js";
import { Backoff } from "../../src/backoff";
import { ReconnectingAudioStream, type StateChange } from "../../src/stream";
import { activeTimers, FakeCall } from "../support/fake-call";
import { sleep, waitFor } from "../support/process";

interface HarnessOptions {
  rejoin?: (isCurrent: () => boolean) => Promise<void>;
  now?: () => number;
  stableAfterMs?: number;
  maxPendingWrites?: number;
}

function harness(options: HarnessOptions = {}) {
  const calls: FakeCall[] = [];
  const audio: Buffer[] = [];
  const states: StateChange[] = [];
  let rejoins = 0;
  const stream = new ReconnectingAudioStream({
    openCall: () => {
      const call = new FakeCall();
      calls.push(call);
      return call;
    },
    rejoin: async (isCurrent) => {
      rejoins += 1;
      await options.rejoin?.(isCurrent);
    },
    onAudio: (chunk) => audio.push(chunk.pcm_data),
    onStateChange: (change) => states.push(change),
    // Tiny delays keep the test fast; the bounds themselves are tested in backoff.test.ts.
    backoff: new Backoff({ initialMs: 2, maxMs: 8, random: () => 1 }),
    ...(options.now === undefined ? {} : { now: options.now }),
    ...(options.stableAfterMs === undefined ? {} : { stableAfterMs: options.stableAfterMs }),
    ...(options.maxPendingWrites === undefined ? {} : { maxPendingWrites: options.maxPendingWrites }),
  });
  return {
    stream,
    calls,
    audio,
    states,
    rejoins: () => rejoins,
    last: (): FakeCall => {
      const call = calls.at(-1);
      assert.ok(call !== undefined, "a call was opened");
      return call;
    },
  };
}

describe("ReconnectingAudioStream", () => {
  test("the first message names the user with empty PCM at 16 kHz mono; audio goes to onAudio", () => {
    const h = harness();
    h.stream.open("user-1");
    const first = h.last().written[0];
    assert.ok(first !== undefined);
    assert.equal(first.user_id, "user-1");
    assert.equal(Buffer.from(first.pcm_data as Buffer).length, 0);
    assert.equal(first.sample_rate, 16000);
    assert.equal(first.channels, 1);
    h.last().receive(Buffer.from([1, 2, 3, 4]));
    assert.deepEqual(h.audio, [Buffer.from([1, 2, 3, 4])]);
    h.stream.close();
  });

  test("an error ends the call: it re-joins, opens a new call, and says why it reconnected", async () => {
    const h = harness();
    h.stream.open("u");
    h.last().finish(Status.UNAVAILABLE, "bridge shutting down");
    assert.equal(h.stream.state, "reconnecting");
    await waitFor(() => h.calls.length === 2 && h.stream.state === "open", 2000, "the new call");
    assert.equal(h.rejoins(), 1);
    assert.equal(h.last().written[0]?.user_id, "u", "the new call starts with the naming message too");
    const reconnecting = h.states.find((s) => s.state === "reconnecting");
    assert.equal(reconnecting?.end?.code, Status.UNAVAILABLE);
    assert.equal(reconnecting?.end?.details, "bridge shutting down");
    assert.deepEqual(
      h.states.map((s) => s.state),
      ["open", "reconnecting", "open"],
    );
    assert.equal(h.stream.counters.reconnects, 1);
    h.stream.close();
  });

  test("a stream a draining bridge ended re-joins at once, without the backoff's wait", async () => {
    const h = harness();
    h.stream.open("u");
    h.last().finish(Status.UNAVAILABLE, "bridge draining: join again to continue on another bridge");
    const reconnecting = h.states.find((s) => s.state === "reconnecting");
    assert.equal(reconnecting?.retryInMs, 0, "no wait: the bridge asked for the re-join");
    await waitFor(() => h.calls.length === 2 && h.stream.state === "open", 2000, "the new call");
    assert.equal(h.rejoins(), 1);
    h.stream.close();
  });

  test("a clean end the client did not ask for (OK + x-bridge-end-reason) reconnects too", async () => {
    const h = harness();
    h.stream.open("u");
    h.last().finish(Status.OK, "session left: by someone else", "session left: by someone else");
    await waitFor(() => h.calls.length === 2 && h.stream.state === "open", 2000, "the new call");
    const reconnecting = h.states.find((s) => s.state === "reconnecting");
    assert.equal(reconnecting?.end?.code, Status.OK);
    assert.equal(reconnecting?.end?.endReason, "session left: by someone else");
    h.stream.close();
  });

  test("the end of its own superseded call is ignored: no reconnect, no flapping", async () => {
    const h = harness();
    h.stream.open("u");
    const first = h.last();
    h.stream.open("u"); // e.g. connect() again: the first call is replaced and cancelled
    assert.equal(first.cancelled, true);
    await sleep(30); // the cancelled call reports CANCELLED (asynchronously, as grpc-js does)
    assert.equal(h.rejoins(), 0);
    assert.equal(h.calls.length, 2);
    assert.equal(h.stream.state, "open");
    // The bridge ends the superseded call cleanly as well: still nothing happens.
    first.emit("status", { code: Status.OK, details: "superseded", metadata: undefined });
    first.receive(Buffer.from([9, 9]));
    await sleep(30);
    assert.equal(h.rejoins(), 0);
    assert.deepEqual(h.audio, [], "audio of a retired call is not delivered");
    h.stream.close();
  });

  test("listeners and timers do not accumulate across 30 reconnects", async () => {
    const h = harness();
    const baseline = activeTimers();
    h.stream.open("u");
    for (let cycle = 1; cycle <= 30; cycle++) {
      h.last().finish(cycle % 2 ? Status.UNAVAILABLE : Status.OK, "gone");
      assert.equal(h.stream.retryPending, true);
      assert.equal(activeTimers(), baseline + 1, "exactly one retry timer while reconnecting");
      await waitFor(() => h.calls.length === cycle + 1 && h.stream.state === "open", 2000, `reconnect ${cycle}`);
      assert.equal(h.stream.retryPending, false);
      assert.equal(activeTimers(), baseline, "no timer left once open");
      assert.deepEqual(h.last().listenersOf(), { data: 1, error: 1, status: 1 });
    }
    for (const retired of h.calls.slice(0, -1)) {
      const listeners = retired.listenersOf();
      assert.equal(listeners.data + listeners.status, 0, "retired calls keep no data/status listener");
      assert.ok(listeners.error <= 1, "at most the no-op error listener");
    }
    h.stream.close();
    await sleep(10);
    assert.deepEqual(h.calls.at(-1)?.listenersOf(), { data: 0, error: 1, status: 0 });
    assert.equal(activeTimers(), baseline);
    assert.equal(h.stream.counters.reconnects, 30);
    assert.equal(h.stream.counters.callsOpened, 31);
  });

  test("failed re-joins are retried with growing delays until one succeeds", async () => {
    let failures = 3;
    const h = harness({
      // eslint-disable-next-line @typescript-eslint/require-await -- a failure must reject, as the real rejoin's does
      rejoin: async () => {
        if (failures > 0) {
          failures -= 1;
          throw new Error("JoinRoom failed: UNAVAILABLE: No connection established");
        }
      },
    });
    h.stream.open("u");
    h.last().finish(Status.UNAVAILABLE, "connection dropped");
    await waitFor(() => h.stream.state === "open" && h.calls.length === 2, 3000, "the reconnect");
    assert.equal(h.rejoins(), 4);
    assert.equal(h.stream.counters.failedRejoins, 3);
    const delays = h.states.filter((s) => s.state === "reconnecting").map((s) => s.retryInMs);
    assert.deepEqual(delays, [2, 4, 8, 8], "ceilings double up to the cap (random pinned to 1)");
    assert.ok(h.states.some((s) => s.error?.includes("No connection established")));
    h.stream.close();
  });

  test("close() cancels a pending retry, and a re-join that finishes after close() opens nothing", async () => {
    const pending = harness();
    pending.stream.open("u");
    pending.last().finish(Status.UNAVAILABLE, "x");
    pending.stream.close();
    assert.equal(pending.stream.retryPending, false);
    await sleep(30);
    assert.equal(pending.rejoins(), 0);
    assert.equal(pending.calls.length, 1);

    let release: () => void = () => undefined;
    let sawObsolete = false;
    const inFlight = harness({
      rejoin: (isCurrent) =>
        new Promise<void>((resolve) => {
          release = () => {
            sawObsolete = !isCurrent();
            resolve();
          };
        }),
    });
    inFlight.stream.open("u");
    inFlight.last().finish(Status.UNAVAILABLE, "x");
    await waitFor(() => inFlight.rejoins() === 1, 2000, "the re-join to start");
    inFlight.stream.close();
    release();
    await sleep(30);
    assert.equal(sawObsolete, true, "the re-join is told it is obsolete");
    assert.equal(inFlight.calls.length, 1);
    assert.equal(inFlight.stream.state, "idle");
  });

  test("audio sent while reconnecting, or beyond the pending-write limit, is dropped and counted", async () => {
    const h = harness({ maxPendingWrites: 2 });
    h.stream.open("u");
    assert.equal(h.stream.write(Buffer.alloc(320), 2), true);
    const chunk = h.last().written[1];
    assert.equal(chunk?.track_id, 2);
    assert.equal(chunk?.sample_rate, 16000);
    assert.equal(chunk?.user_id, "u");
    assert.equal(h.stream.write(Buffer.alloc(320)), true);
    assert.equal(h.last().written[2]?.track_id, undefined, "no track_id unless given (0 = speaker)");

    h.last().writableLength = 2; // HTTP/2 flow control: the bridge is not reading
    assert.equal(h.stream.write(Buffer.alloc(320)), false);
    assert.equal(h.stream.counters.droppedBackpressure, 1);

    h.last().finish(Status.UNAVAILABLE, "x");
    assert.equal(h.stream.write(Buffer.alloc(320)), false);
    assert.equal(h.stream.counters.droppedWhileDown, 1);
    await waitFor(() => h.stream.state === "open", 2000, "the reconnect");
    assert.equal(h.stream.write(Buffer.alloc(320)), true);
    h.stream.close();
    assert.equal(h.stream.write(Buffer.alloc(320)), false);
  });

  test("chunks the bridge would reject (half samples, bad track ids) are refused locally, not sent", () => {
    const h = harness();
    h.stream.open("u");
    assert.equal(h.stream.write(Buffer.alloc(321)), false);
    assert.equal(h.stream.write(Buffer.alloc(320), -1), false);
    assert.equal(h.stream.write(Buffer.alloc(320), 1.5), false);
    assert.equal(h.stream.counters.rejectedInvalid, 3);
    assert.equal(h.last().written.length, 1, "only the naming message went out");
    h.stream.close();
  });

  test("a call that lived stableAfterMs resets the backoff; one that died young does not", async () => {
    let now = 0;
    const h = harness({ now: () => now, stableAfterMs: 5000 });
    h.stream.open("u");
    for (let i = 0; i < 3; i++) {
      h.last().finish(Status.UNAVAILABLE, "flaky");
      await waitFor(() => h.calls.length === i + 2 && h.stream.state === "open", 2000, "reconnect");
    }
    const young = h.states.filter((s) => s.state === "reconnecting").map((s) => s.retryInMs);
    assert.deepEqual(young, [2, 4, 8]);
    now += 5000;
    h.last().finish(Status.UNAVAILABLE, "after a long healthy call");
    assert.equal(h.states.at(-1)?.retryInMs, 2);
    await waitFor(() => h.stream.state === "open", 2000, "reconnect");
    h.stream.close();
  });

  test("dispose() is final", () => {
    const h = harness();
    h.stream.open("u");
    h.stream.dispose();
    h.stream.dispose();
    assert.equal(h.stream.state, "closed");
    assert.throws(() => h.stream.open("u"));
  });
});
