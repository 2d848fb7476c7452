/**
 * AudioPacer: turns room audio that arrives in bursts into frames of fixed length at a steady cadence.
 *
 * Why: the bridge forwards the phone's audio as it gets it, and networks deliver it in clumps (four
 * chunks within 5 ms, then nothing for 300 ms). Streaming transcription services expect audio at
 * the pace it was spoken and in fixed-size frames. The pacer is a small jitter buffer:
 *
 *  - The first audio after a silence is held for `jitterMs`, then one frame of `cadenceMs` is handed
 *    on every `cadenceMs`, on a schedule kept against the clock (timer lateness does not accumulate).
 *  - It holds at most `maxBufferMs`; beyond that the OLDEST audio is dropped (counted): fresh audio
 *    matters more for live transcription, and a stalled consumer must cost bounded memory.
 *  - When no full frame has been available for `idleTicks` ticks (the speaker stopped, or the stream
 *    ended), what is left is handed on as one shorter frame and the timer stops: an idle session
 *    keeps no timer running, and the next audio starts a new jitter delay.
 *  - Chunks of any size (odd byte counts included) are concatenated as one byte stream; frames are
 *    cut at sample boundaries of that stream.
 *
 * `mode: "passthrough"` hands every chunk on synchronously, unchanged, for consumers that prefer raw
 * low latency to a steady cadence; counters are kept the same way.
 */
import { performance } from "node:perf_hooks";
import { ByteQueue } from "./byte-queue";

export type PacerMode = "paced" | "passthrough";

export interface AudioPacerOptions {
  mode?: PacerMode;
  /** Hz of the PCM (s16le). Default 16000, what the bridge sends. */
  sampleRate?: number;
  /** Interleaved channels. Default 1. */
  channels?: number;
  /** Length of each frame and time between frames. Default 100 ms. */
  cadenceMs?: number;
  /** Delay before the first frame after a silence: the arrival jitter absorbed. Default: cadenceMs. */
  jitterMs?: number;
  /** Most audio held; the oldest is dropped beyond it. Default 1000 ms. */
  maxBufferMs?: number;
  /** Ticks without a full frame before the tail is flushed and the timer stops. Default 2. */
  idleTicks?: number;
  /** Monotonic clock in ms. Default performance.now; tests inject their fake clock. */
  now?: () => number;
  /** Called when `onFrame` throws; the pacer keeps its cadence either way. */
  onError?: (err: unknown) => void;
}

export interface PacerCounters {
  chunksIn: number;
  bytesIn: number;
  framesOut: number;
  bytesOut: number;
  /** Bytes dropped because the buffer was full (oldest first). */
  droppedBytes: number;
  /** Times the buffer overflowed. */
  overflows: number;
  /** Ticks inside continuous audio that found no full frame (the input fell behind the cadence). */
  underruns: number;
  /** Ticks that fired more than one cadence late (a blocked event loop): the schedule was re-anchored. */
  lateTicks: number;
  /** Shorter-than-cadence frames handed on at the end of a talk spurt. */
  tailFrames: number;
  /** Exceptions thrown by onFrame. */
  consumerErrors: number;
  /** Largest backlog seen, in bytes. */
  maxBufferedBytes: number;
}

const BYTES_PER_SAMPLE = 2;

function positive(name: string, value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(`AudioPacer: ${name} must be a positive number, got ${value}`);
  }
  return value;
}

export class AudioPacer {
  readonly mode: PacerMode;
  readonly cadenceMs: number;
  readonly jitterMs: number;
  /** Bytes in one frame of cadenceMs. */
  readonly frameBytes: number;
  /** Bytes in one sample of all channels: frames and drops are cut at multiples of it. */
  readonly sampleBytes: number;
  readonly maxBufferBytes: number;

  private readonly bytesPerMs: number;
  private readonly idleTicks: number;
  private readonly now: () => number;
  private readonly onError: ((err: unknown) => void) | undefined;
  private readonly queue = new ByteQueue();
  private readonly stats: PacerCounters = {
    chunksIn: 0,
    bytesIn: 0,
    framesOut: 0,
    bytesOut: 0,
    droppedBytes: 0,
    overflows: 0,
    underruns: 0,
    lateTicks: 0,
    tailFrames: 0,
    consumerErrors: 0,
    maxBufferedBytes: 0,
  };
  private timer: NodeJS.Timeout | undefined;
  /** Clock time the next tick is due. */
  private nextAt = 0;
  /** Consecutive ticks without a full frame; they count as underruns only if audio resumes. */
  private missedTicks = 0;
  private closed = false;

  constructor(
    private readonly onFrame: (pcm: Buffer) => void,
    options: AudioPacerOptions = {},
  ) {
    this.mode = options.mode ?? "paced";
    const sampleRate = positive("sampleRate", options.sampleRate ?? 16000);
    const channels = positive("channels", options.channels ?? 1);
    this.cadenceMs = positive("cadenceMs", options.cadenceMs ?? 100);
    this.jitterMs = options.jitterMs ?? this.cadenceMs;
    if (!(this.jitterMs >= 0)) {
      throw new RangeError(`AudioPacer: jitterMs must be >= 0, got ${this.jitterMs}`);
    }
    this.idleTicks = Math.max(1, Math.floor(options.idleTicks ?? 2));
    this.sampleBytes = BYTES_PER_SAMPLE * channels;
    this.bytesPerMs = (sampleRate * this.sampleBytes) / 1000;
    const samplesPerFrame = Math.round((sampleRate * this.cadenceMs) / 1000);
    if (samplesPerFrame < 1) {
      throw new RangeError("AudioPacer: cadenceMs is shorter than one sample");
    }
    this.frameBytes = samplesPerFrame * this.sampleBytes;
    const maxBufferMs = positive("maxBufferMs", options.maxBufferMs ?? 1000);
    // Never less than one frame plus the jitter delay, or steady input would overflow.
    const minimum = this.frameBytes + this.alignUp(this.jitterMs * this.bytesPerMs);
    this.maxBufferBytes = Math.max(this.alignDown(maxBufferMs * this.bytesPerMs), minimum);
    this.now = options.now ?? (() => performance.now());
    this.onError = options.onError;
  }

  /** Audio waiting to be handed on. */
  get bufferedBytes(): number {
    return this.queue.length;
  }

  get bufferedMs(): number {
    return this.queue.length / this.bytesPerMs;
  }

  /** Whether the cadence timer is running (false while idle: no timer is kept). */
  get running(): boolean {
    return this.timer !== undefined;
  }

  get counters(): Readonly<PacerCounters> {
    return { ...this.stats };
  }

  push(pcm: Uint8Array): void {
    if (this.closed || pcm.length === 0) {
      return;
    }
    this.stats.chunksIn += 1;
    this.stats.bytesIn += pcm.length;
    if (this.mode === "passthrough") {
      this.deliver(Buffer.isBuffer(pcm) ? pcm : Buffer.from(pcm.buffer, pcm.byteOffset, pcm.length));
      return;
    }
    // A copy: the caller may reuse its buffer, and the pacer holds this one for a while.
    this.queue.push(Buffer.from(pcm));
    const excess = this.queue.length - this.maxBufferBytes;
    if (excess > 0) {
      this.stats.droppedBytes += this.queue.discard(this.alignUp(excess));
      this.stats.overflows += 1;
    }
    this.stats.maxBufferedBytes = Math.max(this.stats.maxBufferedBytes, this.queue.length);
    if (this.timer === undefined) {
      this.missedTicks = 0;
      this.nextAt = this.now() + this.jitterMs;
      this.timer = setTimeout(this.tick, this.jitterMs);
    }
  }

  /** Hands on everything buffered now (whole frames, then the tail) and stops the timer. */
  flush(): void {
    this.stopTimer();
    while (this.queue.length >= this.frameBytes) {
      this.emitFrame();
    }
    this.emitTail();
  }

  /** Stops for good: the timer is cleared, buffered audio dropped, later pushes ignored. Idempotent. */
  close(): void {
    this.closed = true;
    this.stopTimer();
    this.queue.clear();
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    const now = this.now();
    if (now - this.nextAt > this.cadenceMs) {
      // The event loop was blocked for more than a period: re-anchor instead of bursting to catch up.
      this.stats.lateTicks += 1;
      this.nextAt = now;
    }
    if (this.queue.length >= this.frameBytes) {
      this.stats.underruns += this.missedTicks;
      this.missedTicks = 0;
      this.schedule();
      this.emitFrame();
      return;
    }
    this.missedTicks += 1;
    if (this.missedTicks >= this.idleTicks) {
      // End of a talk spurt, not an underrun: hand on the rest and go idle.
      this.missedTicks = 0;
      this.emitTail();
      return;
    }
    this.schedule();
  };

  private schedule(): void {
    this.nextAt += this.cadenceMs;
    this.timer = setTimeout(this.tick, Math.max(0, this.nextAt - this.now()));
  }

  private stopTimer(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  private emitFrame(): void {
    this.deliver(this.queue.read(this.frameBytes));
  }

  private emitTail(): void {
    const whole = this.alignDown(this.queue.length);
    if (whole > 0) {
      this.stats.tailFrames += 1;
      this.deliver(this.queue.read(whole));
    }
    // A half sample stays: the byte stream goes on with its other half, and dropping it would shift
    // every later sample by one byte.
  }

  private deliver(frame: Buffer): void {
    this.stats.framesOut += 1;
    this.stats.bytesOut += frame.length;
    try {
      this.onFrame(frame);
    } catch (err) {
      this.stats.consumerErrors += 1;
      this.onError?.(err);
    }
  }

  private alignDown(bytes: number): number {
    return Math.floor(bytes / this.sampleBytes) * this.sampleBytes;
  }

  private alignUp(bytes: number): number {
    return Math.ceil(bytes / this.sampleBytes) * this.sampleBytes;
  }
}
