/** A stand-in for grpc-js's StreamAudio call: records writes, and ends the way grpc-js does. */
import { EventEmitter } from "node:events";
import { Metadata, status as Status, type StatusObject } from "@grpc/grpc-js";
import type { AudioChunk, AudioChunk__Output } from "../../src/generated/mentra/livekit/bridge/AudioChunk";
import type { AudioCall } from "../../src/stream";

export class FakeCall extends EventEmitter implements AudioCall {
  readonly written: AudioChunk[] = [];
  writableLength = 0;
  endCalls = 0;
  cancelled = false;
  private finished = false;

  write(chunk: AudioChunk): boolean {
    this.written.push(chunk);
    return true;
  }

  end(): void {
    this.endCalls += 1;
  }

  /** Like grpc-js: a cancelled call reports CANCELLED, asynchronously, through 'error' then 'status'. */
  cancel(): void {
    if (!this.cancelled && !this.finished) {
      this.cancelled = true;
      setImmediate(() => this.finish(Status.CANCELLED, "Cancelled on client"));
    }
  }

  receive(pcm: Buffer, notice = ""): void {
    const chunk: AudioChunk__Output = {
      pcm_data: pcm,
      sample_rate: 16000,
      channels: 1,
      timestamp_ms: String(Date.now()),
      user_id: "u",
      track_id: 0,
      notice,
    };
    this.emit("data", chunk);
  }

  /** The call ends: 'error' first unless OK, then 'status' (grpc-js's order). */
  finish(code: Status, details: string, endReason?: string): void {
    if (this.finished) {
      return;
    }
    this.finished = true;
    const metadata = new Metadata();
    if (endReason !== undefined) {
      metadata.set("x-bridge-end-reason", endReason);
    }
    if (code !== Status.OK) {
      this.emit("error", Object.assign(new Error(details), { code, details, metadata }));
    }
    const status: StatusObject = { code, details, metadata };
    this.emit("status", status);
  }

  listenersOf(): { data: number; error: number; status: number } {
    return {
      data: this.listenerCount("data"),
      error: this.listenerCount("error"),
      status: this.listenerCount("status"),
    };
  }
}

type TimerHandle = { hasRef?: () => boolean };

/**
 * Bun's process.getActiveResourcesInfo() lists nothing, so under Bun the timers are counted by
 * wrapping the global timer functions (installed when this module loads, before any test runs):
 * created and neither fired nor cleared, and not unref()'d (what Node's list counts).
 */
const bunTimers = typeof (globalThis as { Bun?: unknown }).Bun === "undefined" ? undefined : trackTimers();

function trackTimers(): Set<TimerHandle> {
  const live = new Set<TimerHandle>();
  const g = globalThis as unknown as Record<string, (...args: unknown[]) => unknown>;
  const wrapSet = (name: "setTimeout" | "setInterval", once: boolean): void => {
    const real = g[name] as (...args: unknown[]) => TimerHandle;
    g[name] = Object.assign((handler: unknown, ms?: unknown, ...args: unknown[]) => {
      const callback =
        typeof handler === "function" && once
          ? (...callArgs: unknown[]) => {
              live.delete(timer);
              return (handler as (...a: unknown[]) => unknown)(...callArgs);
            }
          : handler;
      const timer: TimerHandle = real(callback, ms, ...args);
      live.add(timer);
      return timer;
    }, real);
  };
  const wrapClear = (name: "clearTimeout" | "clearInterval"): void => {
    const real = g[name] as (timer: unknown) => void;
    g[name] = (timer: unknown) => {
      live.delete(timer as TimerHandle);
      real(timer);
    };
  };
  wrapSet("setTimeout", true);
  wrapSet("setInterval", false);
  wrapClear("clearTimeout");
  wrapClear("clearInterval");
  return live;
}

/** Timers alive in the process (real timers only). */
export function activeTimers(): number {
  if (bunTimers !== undefined) {
    return [...bunTimers].filter((timer) => timer.hasRef?.() !== false).length;
  }
  return process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
}
