/**
 * Whether the bridge can be reached, per BridgeChannel, from the connectivity of its connections,
 * and the fail-fast period ("cooldown") that follows when it cannot.
 *
 * Without it, every call made while the bridge is away waits: a re-join waits for the channel
 * until its deadline (20 s), a PlayAudio has no deadline at all, and against an address that drops
 * packets each connection attempt alone takes 20 s. So:
 *
 *  - the bridge counts as unreachable when the channel has been trying to connect for `openAfterMs`
 *    (default 5 s, about 6 refused attempts with the channel's 100 ms..1 s backoff) without any
 *    connection becoming READY;
 *  - from then on (state "unavailable") the clients fail fast: connect()/rejoin() reject with
 *    BridgeUnavailableError, playAudio() resolves FAILED (`bridge_unavailable`), stopAudio() and
 *    getStatus() answer at once; calls already waiting are cancelled the same way; the audio streams
 *    stop re-joining and report "unavailable" through onStateChange;
 *  - that lasts until a connection is READY again (checked every `probeIntervalMs`, default 2 s:
 *    one connection attempt per channel, not per session), or at most `cooldownMs` (default 5 min,
 *    the server-playback spec's cooldown), after which calls go through again. Either way the
 *    streams re-join on their own. With `probeIntervalMs: 0` the cooldown is served in full.
 */
import { type ChannelInterface as Channel, connectivityState as ConnectivityState, status as Status } from "@grpc/grpc-js";

export interface AvailabilityOptions {
  /** Trying to connect this long without success makes the bridge "unavailable". Default 5000 ms. */
  openAfterMs?: number;
  /** Longest fail-fast period; calls go through again after it. Default 300000 ms (5 min). */
  cooldownMs?: number;
  /** While unavailable, try to connect this often and end the cooldown on success; 0 = never (serve the cooldown). Default 2000 ms. */
  probeIntervalMs?: number;
}

export const DEFAULT_AVAILABILITY = Object.freeze({ openAfterMs: 5_000, cooldownMs: 300_000, probeIntervalMs: 2_000 });

export interface AvailabilityChange {
  available: boolean;
  /** On "unavailable": the longest the fail-fast period can last from now (the cooldown). */
  retryInMs?: number;
  /**
   * Connection failures seen since a connection was last READY. A lower bound of the attempts:
   * while grpc-js keeps retrying in TRANSIENT_FAILURE it reports a run of failed attempts once.
   */
  failedAttempts: number;
  /** On recovery: how long calls failed fast. */
  unavailableForMs?: number;
  /** On recovery: "connected" (a connection is READY) or "cooldown" (the cooldown ran out). */
  recoveredBy?: "connected" | "cooldown";
}

/** A call refused at once because the bridge is unreachable (see BridgeAvailability). */
export class BridgeUnavailableError extends Error {
  override readonly name = "BridgeUnavailableError";
  readonly grpcCode = Status.UNAVAILABLE;
  /** The stable code, as in the bridge's own FAILED events. */
  readonly code = "bridge_unavailable";
  constructor(
    readonly retryInMs: number,
    detail = "the bridge cannot be reached",
  ) {
    super(`bridge_unavailable: ${detail}; failing fast for up to ${Math.ceil(retryInMs / 1000)} s`);
  }
}

interface Watched {
  readonly channel: Channel;
  state: ConnectivityState;
}

function positive(name: string, value: number, allowZero = false): number {
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw new RangeError(`availability: ${name} must be a ${allowZero ? "non-negative" : "positive"} number, got ${value}`);
  }
  return value;
}

export class BridgeAvailability {
  readonly openAfterMs: number;
  readonly cooldownMs: number;
  readonly probeIntervalMs: number;
  private readonly watched: Watched[] = [];
  private readonly listeners = new Set<(change: AvailabilityChange) => void>();
  private readonly now: () => number;
  private failed = 0;
  private openTimer: NodeJS.Timeout | undefined;
  private cooldownTimer: NodeJS.Timeout | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private openedAt: number | undefined;
  private closedForGood = false;
  private readonly stats = { unavailablePeriods: 0, recoveries: 0 };

  constructor(options: AvailabilityOptions = {}, now: () => number = Date.now) {
    this.openAfterMs = positive("openAfterMs", options.openAfterMs ?? DEFAULT_AVAILABILITY.openAfterMs);
    this.cooldownMs = positive("cooldownMs", options.cooldownMs ?? DEFAULT_AVAILABILITY.cooldownMs);
    this.probeIntervalMs = positive("probeIntervalMs", options.probeIntervalMs ?? DEFAULT_AVAILABILITY.probeIntervalMs, true);
    this.now = now;
  }

  /** False while calls fail fast. */
  get available(): boolean {
    return this.openedAt === undefined;
  }

  /** While unavailable: the longest the fail-fast period can still last; 0 when available. */
  get retryInMs(): number {
    return this.openedAt === undefined ? 0 : Math.max(0, this.openedAt + this.cooldownMs - this.now());
  }

  get failedAttempts(): number {
    return this.failed;
  }

  get counters(): { unavailablePeriods: number; recoveries: number } {
    return { ...this.stats };
  }

  /** The error calls fail with while unavailable. */
  error(): BridgeUnavailableError {
    return new BridgeUnavailableError(this.retryInMs, `no connection to the bridge could be made for ${this.openAfterMs} ms`);
  }

  /** Listeners registered with onChange() (one per live client), for diagnostics. */
  get listenerCount(): number {
    return this.listeners.size;
  }

  /** Calls `listener` on every change; returns the function that removes it. */
  onChange(listener: (change: AvailabilityChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Follows the connectivity of one of the channel's connections. */
  watch(channel: Channel): void {
    const entry: Watched = { channel, state: channel.getConnectivityState(false) };
    this.watched.push(entry);
    this.arm(entry);
    this.evaluate();
  }

  /** Stops every timer and watcher (the channel is closing). */
  close(): void {
    this.closedForGood = true;
    this.clearTimers();
    this.listeners.clear();
  }

  private arm(entry: Watched): void {
    if (this.closedForGood || entry.state === ConnectivityState.SHUTDOWN) {
      return;
    }
    try {
      // No deadline: grpc-js then keeps no timer, only the callback.
      entry.channel.watchConnectivityState(entry.state, Infinity, () => {
        const previous = entry.state;
        entry.state = entry.channel.getConnectivityState(false);
        if (previous === ConnectivityState.CONNECTING && entry.state === ConnectivityState.TRANSIENT_FAILURE) {
          this.failed += 1;
        }
        this.arm(entry);
        this.evaluate();
      });
    } catch {
      // The channel was shut down meanwhile.
    }
  }

  private evaluate(): void {
    if (this.closedForGood) {
      return;
    }
    const states = this.watched.map((entry) => entry.state);
    if (states.includes(ConnectivityState.READY)) {
      this.failed = 0;
      this.clearOpenTimer();
      if (this.openedAt !== undefined && this.probeIntervalMs > 0) {
        this.recover("connected");
      }
      return;
    }
    const trying = states.some((s) => s === ConnectivityState.CONNECTING || s === ConnectivityState.TRANSIENT_FAILURE);
    if (trying && this.openedAt === undefined && this.openTimer === undefined) {
      this.openTimer = setTimeout(() => {
        this.openTimer = undefined;
        this.maybeOpen();
      }, this.openAfterMs);
      this.openTimer.unref?.();
    }
  }

  /** openAfterMs of trying have passed: unavailable, unless a connection became READY or nobody tries any more. */
  private maybeOpen(): void {
    const states = this.watched.map((entry) => entry.state);
    if (states.includes(ConnectivityState.READY)) {
      return;
    }
    if (!states.some((s) => s === ConnectivityState.CONNECTING || s === ConnectivityState.TRANSIENT_FAILURE)) {
      return; // idle: no call waits, so none hangs; the next attempt starts the clock again
    }
    this.openedAt = this.now();
    this.stats.unavailablePeriods += 1;
    this.cooldownTimer = setTimeout(() => {
      this.cooldownTimer = undefined;
      this.recover("cooldown");
    }, this.cooldownMs);
    this.cooldownTimer.unref?.();
    if (this.probeIntervalMs > 0) {
      this.probeTimer = setInterval(() => {
        for (const entry of this.watched) {
          if (entry.state !== ConnectivityState.SHUTDOWN) {
            entry.channel.getConnectivityState(true); // starts a connection attempt when idle
          }
        }
      }, this.probeIntervalMs);
      this.probeTimer.unref?.();
    }
    this.emit({ available: false, retryInMs: this.cooldownMs, failedAttempts: this.failed });
  }

  private recover(by: "connected" | "cooldown"): void {
    const openedAt = this.openedAt;
    if (openedAt === undefined) {
      return;
    }
    this.openedAt = undefined;
    this.stats.recoveries += 1;
    this.clearTimers();
    this.emit({ available: true, failedAttempts: this.failed, unavailableForMs: this.now() - openedAt, recoveredBy: by });
    // Still not connected (the cooldown ran out): the clock starts again with the next attempt.
    this.evaluate();
  }

  private emit(change: AvailabilityChange): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(change);
      } catch {
        // A listener's failure must not stop the others (clients log their own).
      }
    }
  }

  private clearOpenTimer(): void {
    if (this.openTimer !== undefined) {
      clearTimeout(this.openTimer);
      this.openTimer = undefined;
    }
  }

  private clearTimers(): void {
    this.clearOpenTimer();
    if (this.cooldownTimer !== undefined) {
      clearTimeout(this.cooldownTimer);
      this.cooldownTimer = undefined;
    }
    if (this.probeTimer !== undefined) {
      clearInterval(this.probeTimer);
      this.probeTimer = undefined;
    }
  }
}
