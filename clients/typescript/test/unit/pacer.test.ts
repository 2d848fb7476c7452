import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, mock, test } from "node:test";
import { AudioPacer, type AudioPacerOptions } from "../../src/pacer";

// 16 kHz mono s16le: 32 bytes per ms, 3200 per 100 ms frame.
const BYTES_PER_MS = 32;
const FRAME = 3200;

/** Bytes 0, 1, 2, ... (mod 251, a prime, so no two nearby windows look alike). */
function pattern(start: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) {
    out[i] = (start + i) % 251;
  }
  return out;
}

interface Frame {
  at: number;
  pcm: Buffer;
}

/** A pacer on the fake clock that records what it hands on, and when. */
function recordingPacer(options: AudioPacerOptions = {}): { pacer: AudioPacer; frames: Frame[] } {
  const frames: Frame[] = [];
  const pacer = new AudioPacer((pcm) => frames.push({ at: Date.now(), pcm }), { now: () => Date.now(), ...options });
  return { pacer, frames };
}

/**
 * Advances the fake clock 1 ms at a time: Node 20's mock timers set Date.now() to the END of a
 * tick() before running the timers inside it, so one big tick would hide when each one fired.
 */
function advance(ms: number): void {
  for (let i = 0; i < ms; i++) {
    mock.timers.tick(1);
  }
}

describe("AudioPacer", () => {
  beforeEach(() => {
    mock.timers.enable({ apis: ["setTimeout", "Date"], now: 0 });
  });
  afterEach(() => {
    mock.timers.reset();
  });

  test("bursts of 4 chunks within 5 ms, then 300 ms of nothing, come out as one 100 ms frame every 100 ms", () => {
    const { pacer, frames } = recordingPacer();
    const chunkBytes = 75 * BYTES_PER_MS; // 4 x 75 ms = the 300 ms the gap lasts
    const offsets = [0, 1, 3, 5];
    const cycles = 8;
    let sent = 0;
    const input: Buffer[] = [];
    for (let cycle = 0; cycle < cycles; cycle++) {
      let elapsed = 0;
      for (const offset of offsets) {
        advance(offset - elapsed);
        elapsed = offset;
        const chunk = pattern(sent, chunkBytes);
        sent += chunkBytes;
        input.push(chunk);
        pacer.push(chunk);
      }
      advance(305 - elapsed);
    }
    advance(1000);

    assert.equal(frames.length, (cycles * 300) / 100);
    assert.ok(frames.every((frame) => frame.pcm.length === FRAME), "every frame is exactly 100 ms");
    const gaps = frames.slice(1).map((frame, i) => frame.at - (frames[i]?.at ?? 0));
    assert.deepEqual(new Set(gaps), new Set([100]), `frame spacing: ${gaps.join(",")}`);
    assert.equal(frames[0]?.at, 100, "the first frame waits one jitter delay");
    assert.ok(Buffer.concat(frames.map((f) => f.pcm)).equals(Buffer.concat(input)), "nothing lost, nothing reordered");
    const counters = pacer.counters;
    assert.equal(counters.underruns, 0);
    assert.equal(counters.droppedBytes, 0);
    assert.equal(counters.chunksIn, cycles * 4);
    assert.equal(counters.framesOut, frames.length);
    assert.ok(counters.maxBufferedBytes <= 300 * BYTES_PER_MS, `max backlog ${counters.maxBufferedBytes}`);
    assert.equal(pacer.running, false, "idle again once the input stopped");
  });

  test("a long burst is bounded: the oldest audio is dropped and counted, the newest is kept", () => {
    const { pacer, frames } = recordingPacer({ maxBufferMs: 1000 });
    const burst = pattern(0, 3000 * BYTES_PER_MS); // 3 s at once
    for (let offset = 0; offset < burst.length; offset += FRAME) {
      pacer.push(burst.subarray(offset, offset + FRAME));
    }
    assert.equal(pacer.bufferedBytes, 1000 * BYTES_PER_MS);
    assert.equal(pacer.bufferedMs, 1000);
    advance(2000);

    const counters = pacer.counters;
    assert.equal(counters.droppedBytes, 2000 * BYTES_PER_MS);
    assert.equal(counters.overflows, 20, "one overflow per chunk pushed into a full buffer");
    assert.equal(counters.maxBufferedBytes, 1000 * BYTES_PER_MS);
    assert.equal(frames.length, 10);
    assert.ok(
      Buffer.concat(frames.map((f) => f.pcm)).equals(burst.subarray(2000 * BYTES_PER_MS)),
      "the frames are the last second of the burst",
    );
    const gaps = frames.slice(1).map((frame, i) => frame.at - (frames[i]?.at ?? 0));
    assert.ok(gaps.every((gap) => gap === 100), `steady even after a burst: ${gaps.join(",")}`);
  });

  test("a long silence hands on the tail, stops the timer, and the next audio waits one jitter delay again", () => {
    const { pacer, frames } = recordingPacer();
    pacer.push(pattern(0, 250 * BYTES_PER_MS));
    advance(400);
    assert.deepEqual(
      frames.map((f) => [f.at, f.pcm.length]),
      [
        [100, FRAME],
        [200, FRAME],
        [400, 50 * BYTES_PER_MS], // two ticks without a full frame: end of the talk spurt
      ],
    );
    assert.equal(pacer.running, false);
    assert.equal(pacer.counters.underruns, 0, "the end of a talk spurt is not an underrun");
    assert.equal(pacer.counters.tailFrames, 1);

    advance(60_000); // a minute of silence: nothing fires, no timer runs
    assert.equal(frames.length, 3);
    assert.equal(pacer.running, false);

    pacer.push(pattern(7, FRAME));
    assert.equal(pacer.running, true);
    advance(99);
    assert.equal(frames.length, 3);
    advance(1);
    assert.equal(frames.length, 4);
    assert.equal(frames[3]?.at, 60_500);
    assert.ok(frames[3]?.pcm.equals(pattern(7, FRAME)));
  });

  test("audio that falls behind the cadence inside a talk spurt counts an underrun", () => {
    const { pacer, frames } = recordingPacer();
    pacer.push(pattern(0, FRAME)); // t=0; played at 100
    advance(150);
    // The next 100 ms should have been here by 200 but arrive at 250: the tick at 200 finds nothing.
    advance(100);
    pacer.push(pattern(FRAME, FRAME));
    advance(100);
    assert.deepEqual(
      frames.map((f) => f.at),
      [100, 300],
    );
    assert.equal(pacer.counters.underruns, 1);
  });

  test("odd-sized chunks are cut into whole frames of the byte stream, and a half sample waits for its other half", () => {
    const { pacer, frames } = recordingPacer();
    const sizes = [1, 333, 1001, 7, 2999, 64, 3201, 3];
    const input: Buffer[] = [];
    let sent = 0;
    for (let round = 0; round < 6; round++) {
      for (const size of sizes) {
        const chunk = pattern(sent, size);
        sent += size;
        input.push(chunk);
        pacer.push(chunk);
        advance(Math.round(size / BYTES_PER_MS)); // about real time on average
      }
    }
    const last = pattern(sent, 1);
    sent += 1;
    input.push(last);
    pacer.push(last);
    assert.equal(sent % 2, 1, "the test ends on half a sample");
    advance(1000);

    const full = frames.slice(0, -1);
    assert.ok(full.length > 10);
    assert.ok(full.every((f) => f.pcm.length === FRAME), "every frame but the tail is exactly 100 ms");
    const tail = frames.at(-1);
    assert.ok(tail !== undefined && tail.pcm.length % 2 === 0 && tail.pcm.length <= FRAME);
    const out = Buffer.concat(frames.map((f) => f.pcm));
    assert.equal(out.length, sent - 1);
    assert.ok(out.equals(Buffer.concat(input).subarray(0, sent - 1)), "bytes in order, none lost");
    assert.equal(pacer.bufferedBytes, 1, "the dangling byte is kept for the next chunk");

    pacer.push(pattern(sent, 3199)); // completes the sample and one frame
    advance(100);
    assert.ok(frames.at(-1)?.pcm.equals(Buffer.concat([last, pattern(sent, 3199)])));
  });

  test("pass-through hands on each chunk at once and unchanged, with no timer", () => {
    const { pacer, frames } = recordingPacer({ mode: "passthrough" });
    const a = pattern(0, 1234);
    const b = pattern(5, 7);
    pacer.push(a);
    pacer.push(b);
    assert.equal(frames.length, 2);
    assert.equal(frames[0]?.pcm, a);
    assert.ok(frames[1]?.pcm.equals(b));
    assert.deepEqual([frames[0]?.at, frames[1]?.at], [0, 0]);
    assert.equal(pacer.running, false);
    assert.equal(pacer.counters.bytesOut, 1241);
  });

  test("a blocked event loop re-anchors the schedule instead of bursting to catch up", () => {
    let stall = 0;
    const frames: Frame[] = [];
    const pacer = new AudioPacer((pcm) => frames.push({ at: Date.now() + stall, pcm }), {
      now: () => Date.now() + stall,
    });
    pacer.push(pattern(0, 10 * FRAME));
    advance(100); // frame at 100
    stall = 450; // the loop was blocked: the next timer fires 450 ms late by the clock
    advance(100);
    advance(300);
    const times = frames.map((f) => f.at);
    assert.deepEqual(times, [100, 650, 750, 850, 950]);
    assert.equal(pacer.counters.lateTicks, 1);
  });

  test("an exception in the consumer is counted and the cadence goes on", () => {
    const errors: unknown[] = [];
    let calls = 0;
    const pacer = new AudioPacer(
      () => {
        calls += 1;
        if (calls === 1) {
          throw new Error("consumer bug");
        }
      },
      { now: () => Date.now(), onError: (err) => errors.push(err) },
    );
    pacer.push(pattern(0, 3 * FRAME));
    advance(300);
    assert.equal(calls, 3);
    assert.equal(pacer.counters.consumerErrors, 1);
    assert.equal(errors.length, 1);
  });

  test("flush() hands on everything now; close() drops the rest, stops the timer, and ignores later audio", () => {
    const { pacer, frames } = recordingPacer();
    pacer.push(pattern(0, 2 * FRAME + 100));
    pacer.flush();
    assert.deepEqual(
      frames.map((f) => f.pcm.length),
      [FRAME, FRAME, 100],
    );
    assert.equal(pacer.running, false);

    pacer.push(pattern(0, FRAME));
    assert.equal(pacer.running, true);
    pacer.close();
    pacer.close();
    assert.equal(pacer.running, false);
    assert.equal(pacer.bufferedBytes, 0);
    pacer.push(pattern(0, FRAME));
    advance(500);
    assert.equal(frames.length, 3);
  });

  test("options are validated and the buffer always fits the jitter delay plus one frame", () => {
    assert.throws(() => new AudioPacer(() => undefined, { cadenceMs: 0 }), RangeError);
    assert.throws(() => new AudioPacer(() => undefined, { jitterMs: -1 }), RangeError);
    const tiny = new AudioPacer(() => undefined, { maxBufferMs: 1, jitterMs: 100 });
    assert.equal(tiny.maxBufferBytes, 200 * BYTES_PER_MS);
    const stereo = new AudioPacer(() => undefined, { channels: 2, sampleRate: 48000, cadenceMs: 20 });
    assert.equal(stereo.frameBytes, 960 * 4);
  });
});
