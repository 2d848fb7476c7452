/** Child processes for the integration tests: spawn, read lines, wait (bounded), kill, and reap. */
import { type ChildProcess, spawn, type SpawnOptions } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";

/** The package root (this file runs from dist/test/support/). */
export const PACKAGE_ROOT = path.resolve(__dirname, "..", "..", "..");

export const PYTHON_HINT =
  "Set BRIDGE_PYTHON to a Python with livekit-bridge installed (e.g. `BRIDGE_PYTHON=/path/to/venv/bin/python npm test`; " +
  "in the repo: the nox session's python, or a venv where `pip install -e .` was run at the repo root).";

/**
 * The Python that runs the bridge and the room driver: $BRIDGE_PYTHON. Unset, the integration tests
 * fail with the hint, never skip; nor do they guess a Python, which would fail later and less clearly.
 */
export function bridgePython(): string {
  const python = process.env["BRIDGE_PYTHON"];
  if (!python) {
    throw new Error(`BRIDGE_PYTHON is not set: the integration tests need the bridge's Python. ${PYTHON_HINT}`);
  }
  return python;
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === "object") {
          resolve(address.port);
        } else {
          reject(new Error("no port"));
        }
      });
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `predicate` every 20 ms until it holds; throws after `timeoutMs`. */
export async function waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(20);
  }
}

/** Rejects after `ms` unless `promise` settles first. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A child process whose stdout and stderr are read line by line: each line is kept (the last 200,
 * for error messages) and offered to the waiters.
 */
export class LineProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  private readonly tail: string[] = [];
  private readonly lineListeners = new Set<(line: string, stream: "stdout" | "stderr") => void>();
  private exitCode: number | null | undefined;
  private spawnError: Error | undefined;

  constructor(command: string, args: string[], options: SpawnOptions) {
    this.child = spawn(command, args, { ...options, stdio: ["pipe", "pipe", "pipe"] });
    this.exited = new Promise((resolve) => {
      this.child.once("error", (err) => {
        this.spawnError = err;
        this.exitCode = null;
        resolve(null);
      });
      this.child.once("exit", (code, signal) => {
        this.exitCode = code ?? (signal === null ? null : -1);
        resolve(this.exitCode);
      });
    });
    for (const [stream, name] of [
      [this.child.stdout, "stdout"],
      [this.child.stderr, "stderr"],
    ] as const) {
      if (stream !== null) {
        createInterface({ input: stream }).on("line", (line) => {
          this.tail.push(line);
          if (this.tail.length > 200) {
            this.tail.shift();
          }
          for (const listener of this.lineListeners) {
            listener(line, name);
          }
        });
      }
    }
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  onLine(listener: (line: string, stream: "stdout" | "stderr") => void): () => void {
    this.lineListeners.add(listener);
    return () => this.lineListeners.delete(listener);
  }

  /** The last lines of output, and why the process could not start, for failure messages. */
  describe(): string {
    const spawnError = this.spawnError ? `spawn error: ${this.spawnError.message}\n` : "";
    const exit = this.exitCode === undefined ? "still running" : `exit code ${this.exitCode}`;
    return `${spawnError}${exit}; last output:\n${this.tail.slice(-40).join("\n")}`;
  }

  /** Resolves with the first line matching `pattern`; rejects if the process exits first or time runs out. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const finish = (err: Error | undefined, match?: RegExpMatchArray): void => {
        clearTimeout(timer);
        remove();
        if (err) {
          reject(err);
        } else if (match) {
          resolve(match);
        }
      };
      const remove = this.onLine((line) => {
        const match = line.match(pattern);
        if (match) {
          finish(undefined, match);
        }
      });
      const timer = setTimeout(() => finish(new Error(`no line matching ${pattern} within ${timeoutMs} ms`)), timeoutMs);
      void this.exited.then(() => finish(new Error(`process exited before printing ${pattern}`)));
    });
  }

  /** SIGKILL, then wait (bounded) until the process is reaped. */
  async kill(): Promise<void> {
    if (this.running) {
      this.child.kill("SIGKILL");
    }
    await within(this.exited, 10_000, "a SIGKILLed process to exit");
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    if (!this.running) {
      return;
    }
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    try {
      await within(this.exited, graceMs + 10_000, "a stopped process to exit");
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Kills `pid` (a grandchild a crashed child could not stop) if it is alive and its command line
 * contains `expected`: a pid reused by an unrelated process is left alone.
 */
export function killPid(pid: number, expected: string): void {
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return; // gone
  }
  if (cmdline.includes(expected)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Exited meanwhile.
    }
  }
}
