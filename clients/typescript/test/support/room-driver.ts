/**
 * The TypeScript side of test/support/room_driver.py: a real LiveKit server on loopback and real
 * participants (the phone, a listener) driven over JSON lines.
 */
import path from "node:path";
import { describeError } from "../../src/logger";
import { bridgePython, killPid, LineProcess, PACKAGE_ROOT, PYTHON_HINT, within } from "./process";

const DRIVER = path.join(PACKAGE_ROOT, "test", "support", "room_driver.py");
const READY_TIMEOUT_MS = 60_000;
const COMMAND_TIMEOUT_MS = 70_000; // the driver bounds each command at 60 s itself

/** Packet `n`'s payload, as room_driver.py's `payload(n, size)` makes it. */
export function packetPayload(n: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let k = 0; k < size; k++) {
    out[k] = (n * 31 + k * 7) & 0xff;
  }
  return out;
}

export interface Heard {
  samples: number;
  loud_ms: number;
  rms: number;
  dominant_hz: number;
}

interface Reply {
  id: number;
  ok: boolean;
  error?: string;
  [key: string]: unknown;
}

function isReply(value: unknown): value is Reply {
  return typeof value === "object" && value !== null && "id" in value && "ok" in value;
}

export class RoomDriver {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (reply: Reply) => void; reject: (err: Error) => void }>();

  private constructor(
    private readonly proc: LineProcess,
    readonly url: string,
    private readonly serverPid: number,
  ) {
    proc.onLine((line, stream) => {
      if (stream !== "stdout" || !line.startsWith("{")) {
        return;
      }
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch {
        return;
      }
      if (isReply(message)) {
        const waiter = this.pending.get(message.id);
        this.pending.delete(message.id);
        waiter?.resolve(message);
      }
    });
    void proc.exited.then(() => {
      for (const waiter of this.pending.values()) {
        waiter.reject(new Error(`room driver exited: ${proc.describe()}`));
      }
      this.pending.clear();
    });
  }

  static async start(): Promise<RoomDriver> {
    const python = bridgePython();
    const proc = new LineProcess(python, [DRIVER], { cwd: PACKAGE_ROOT, env: { ...process.env, PYTHONUNBUFFERED: "1" } });
    try {
      const match = await proc.waitForLine(/^\{"event": "ready".*\}$/, READY_TIMEOUT_MS);
      const ready = JSON.parse(match[0]) as { url: string; server_pid: number };
      return new RoomDriver(proc, ready.url, ready.server_pid);
    } catch (err) {
      await proc.kill();
      throw new Error(
        `could not start the LiveKit room driver with BRIDGE_PYTHON=${python} (${describeError(err)}).\n` +
          `${PYTHON_HINT}\n${proc.describe()}`,
        { cause: err },
      );
    }
  }

  async request<T extends object>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    const reply = new Promise<Reply>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.proc.child.stdin?.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    const answer = await within(reply, COMMAND_TIMEOUT_MS, `room driver command ${cmd}`).finally(() =>
      this.pending.delete(id),
    );
    if (!answer.ok) {
      throw new Error(`room driver ${cmd} failed: ${answer.error ?? "?"}`);
    }
    return answer as unknown as T;
  }

  /** The LiveKit server's last log lines: its side of an unexpected failure. */
  async serverLog(lines = 40): Promise<string> {
    return (await this.request<{ log: string }>("server_log", { lines })).log;
  }

  async token(identity: string, room: string): Promise<string> {
    return (await this.request<{ token: string }>("token", { identity, room })).token;
  }

  async connect(name: string, identity: string, room: string): Promise<void> {
    await this.request("connect", { name, identity, room });
  }

  async waitParticipant(name: string, identity: string, timeoutS = 10): Promise<void> {
    await this.request("wait_participant", { name, identity, timeout_s: timeoutS });
  }

  async sendPackets(name: string, firstSeq: number, count: number, payloadBytes: number, intervalMs: number): Promise<void> {
    await this.request("send_packets", {
      name,
      first_seq: firstSeq,
      count,
      payload_bytes: payloadBytes,
      interval_ms: intervalMs,
    });
  }

  async listen(name: string, fromIdentity: string): Promise<void> {
    await this.request("listen", { name, from_identity: fromIdentity });
  }

  async heard(name: string, track: string, threshold = 1000): Promise<Heard> {
    return this.request<Heard>("heard", { name, track, threshold });
  }

  async forget(name: string): Promise<void> {
    await this.request("forget", { name });
  }

  async serveDir(dir: string): Promise<string> {
    return (await this.request<{ base_url: string }>("serve_dir", { dir })).base_url;
  }

  async disconnect(name: string): Promise<void> {
    await this.request("disconnect", { name });
  }

  /** Asks the driver to stop everything; kills it (and its LiveKit server) if it does not in time. */
  async close(): Promise<void> {
    let clean = false;
    if (this.proc.running) {
      this.proc.child.stdin?.write(`${JSON.stringify({ id: 0, cmd: "shutdown" })}\n`);
      this.proc.child.stdin?.end();
      try {
        clean = (await within(this.proc.exited, 15_000, "the room driver to exit")) === 0;
      } catch {
        await this.proc.kill();
      }
    }
    if (!clean) {
      // Its server runs in a session of its own and outlives a killed driver.
      killPid(this.serverPid, "livekit");
    }
  }
}
