import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Backoff } from "../../src/backoff";

describe("Backoff", () => {
  test("the ceiling doubles from initialMs and stops at maxMs", () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 1 });
    const delays = Array.from({ length: 7 }, () => backoff.next());
    assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
    assert.equal(backoff.attempts, 7);
  });

  test("jitter keeps every delay within [ceiling / 2, ceiling]", () => {
    const low = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0 });
    assert.deepEqual(
      Array.from({ length: 6 }, () => low.next()),
      [50, 100, 200, 400, 500, 500],
    );
    const real = new Backoff({ initialMs: 100, maxMs: 1000 });
    const seen = new Set<number>();
    for (let round = 0; round < 200; round++) {
      real.reset();
      for (let attempt = 0; attempt < 8; attempt++) {
        const ceiling = real.ceilingMs;
        const delay = real.next();
        assert.ok(delay >= ceiling / 2 && delay <= ceiling, `attempt ${attempt}: ${delay} outside [${ceiling / 2}, ${ceiling}]`);
        seen.add(Math.round(delay));
      }
    }
    assert.ok(seen.size > 100, "delays are actually spread (jitter), not fixed");
  });

  test("a random source outside [0, 1) cannot push a delay out of bounds", () => {
    assert.equal(new Backoff({ initialMs: 100, random: () => 5 }).next(), 100);
    assert.equal(new Backoff({ initialMs: 100, random: () => -3 }).next(), 50);
  });

  test("reset() starts from the first ceiling again", () => {
    const backoff = new Backoff({ initialMs: 10, maxMs: 80, random: () => 1 });
    backoff.next();
    backoff.next();
    backoff.next();
    backoff.reset();
    assert.equal(backoff.attempts, 0);
    assert.equal(backoff.next(), 10);
  });

  test("the defaults reach a restarted bridge quickly: first retry within 100 ms, never more than 1 s", () => {
    const backoff = new Backoff();
    assert.equal(backoff.ceilingMs, 100);
    for (let i = 0; i < 20; i++) {
      assert.ok(backoff.next() <= 1000);
    }
  });

  test("impossible settings are refused", () => {
    assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
    assert.throws(() => new Backoff({ initialMs: 500, maxMs: 100 }), RangeError);
    assert.throws(() => new Backoff({ multiplier: 0.5 }), RangeError);
  });
});
