/**
 * Capped exponential backoff with "equal jitter" for the audio stream's reconnects.
 *
 * Attempt n waits a random time in [c/2, c] where c = min(maxMs, initialMs * multiplier^n). Half
 * fixed, half random: the fixed half keeps a client from hammering a bridge that is down, the random
 * half spreads the many sessions that lose their streams at the same instant (a bridge restart) so
 * they do not all re-join at once.
 */
export interface BackoffOptions {
  /** Ceiling of the first delay (default 100 ms: a restarted bridge is rejoined quickly). */
  initialMs?: number;
  /** Largest ceiling (default 1000 ms). */
  maxMs?: number;
  /** Growth of the ceiling per failed attempt (default 2). */
  multiplier?: number;
  /** Source of randomness in [0, 1); injectable so tests can pin the bounds. */
  random?: () => number;
}

export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 100, maxMs: 1000, multiplier: 2 });

export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly multiplier: number;
  private readonly random: () => number;
  private attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? DEFAULT_BACKOFF.initialMs;
    this.maxMs = options.maxMs ?? DEFAULT_BACKOFF.maxMs;
    this.multiplier = options.multiplier ?? DEFAULT_BACKOFF.multiplier;
    this.random = options.random ?? Math.random;
    if (!(this.initialMs > 0) || !(this.maxMs >= this.initialMs) || !(this.multiplier >= 1)) {
      throw new RangeError("backoff needs 0 < initialMs <= maxMs and multiplier >= 1");
    }
  }

  /** The ceiling for the coming attempt, before jitter. */
  get ceilingMs(): number {
    return Math.min(this.maxMs, this.initialMs * this.multiplier ** this.attempt);
  }

  /** Failed attempts since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  /** The delay before the next attempt; each call counts one more attempt. */
  next(): number {
    const ceiling = this.ceilingMs;
    this.attempt += 1;
    // Clamp: a random() that returns 1 (or a little more, from a sloppy source) stays within bounds.
    const r = Math.min(Math.max(this.random(), 0), 1);
    return ceiling / 2 + (r * ceiling) / 2;
  }

  reset(): void {
    this.attempt = 0;
  }
}
