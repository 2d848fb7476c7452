/**
 * The cloud of the pool tests and the hand-over benchmark (tests/pool, bench/handover): many users'
 * LiveKitGrpcClients on one channel to a proxy in front of several bridges, recording which of their
 * phone's numbered mic packets arrive and when. Driven over JSON lines (one reply line per command):
 *
 *   node dist/test/pool/cloud.js CONFIG.json
 *   CONFIG: {"address": "127.0.0.1:PORT", "users": [{"userId", "roomName", "token", "url"}, ...]}
 *   stdin:  {"id": 1, "cmd": "connect"}   every user connects (JoinRoom + StreamAudio), 10 at a time
 *           {"id": 2, "cmd": "received"}  per user: [counter, arrival ms (epoch)] of every packet so far
 *           {"id": 3, "cmd": "status"}    per user: GetStatus through the proxy (retried once if moved)
 *           {"id": 4, "cmd": "dispose"}   every client disposed (LeaveRoom), the channel closed
 *   stdout: {"event": "ready"} first, then {"id": 1, "ok": true, ...} per command.
 *
 * A phone's packet (bridge.testing.pool): the bridge strips the sequence byte and forwards the rest,
 * whose first 8 bytes are the phone's index and the packet's counter (uint32 LE each).
 */
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { BridgeChannel, LiveKitGrpcClient, type StateChange } from "../../src/index";

interface UserConfig {
  userId: string;
  roomName: string;
  token: string;
  url: string;
}

interface Config {
  address: string;
  users: UserConfig[];
}

interface UserState {
  config: UserConfig;
  client: LiveKitGrpcClient;
  received: [number, number][];
  states: [string, number, string][];
  connectError?: string;
}

const config = JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as Config;
const channel = new BridgeChannel({ address: config.address });
const users = new Map<string, UserState>();

for (const user of config.users) {
  const state: UserState = {
    config: user,
    received: [],
    states: [],
    client: new LiveKitGrpcClient({
      channel,
      userId: user.userId,
      onAudio: (pcm) => {
        if (pcm.length >= 8) {
          state.received.push([pcm.readUInt32LE(4), Date.now()]);
        }
      },
      onStateChange: (change: StateChange) => {
        const detail = change.end ? `${change.end.code}: ${change.end.details}` : (change.error ?? "");
        state.states.push([change.state, Date.now(), detail]);
      },
    }),
  };
  users.set(user.userId, state);
}

function emit(message: object): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

async function inBatches<T>(items: T[], size: number, run: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += size) {
    await Promise.all(items.slice(i, i + size).map(run));
  }
}

async function connectAll(): Promise<object> {
  const started = Date.now();
  const failed: Record<string, string> = {};
  await inBatches([...users.values()], 10, async (user) => {
    try {
      await user.client.connect({ roomName: user.config.roomName, token: user.config.token, url: user.config.url });
    } catch (err) {
      failed[user.config.userId] = err instanceof Error ? err.message : String(err);
    }
  });
  return { ms: Date.now() - started, failed };
}

function received(): object {
  const out: Record<string, object> = {};
  for (const [userId, user] of users) {
    out[userId] = {
      received: user.received,
      states: user.states,
      connected: user.client.isConnected(),
      counters: user.client.streamCounters,
    };
  }
  return { users: out };
}

async function status(): Promise<object> {
  const out: Record<string, object> = {};
  await inBatches([...users.values()], 10, async (user) => {
    try {
      const s = await user.client.getStatus();
      out[user.config.userId] = { connected: s.connected, participantCount: s.participantCount };
    } catch (err) {
      out[user.config.userId] = { error: err instanceof Error ? err.message : String(err) };
    }
  });
  return { users: out };
}

async function dispose(): Promise<object> {
  await Promise.all([...users.values()].map((user) => user.client.dispose()));
  channel.close();
  return {};
}

const commands: Record<string, () => Promise<object> | object> = { connect: connectAll, received, status, dispose };

createInterface({ input: process.stdin }).on("line", (line) => {
  let request: { id?: number; cmd?: string };
  try {
    request = JSON.parse(line) as { id?: number; cmd?: string };
  } catch {
    return;
  }
  const handler = commands[request.cmd ?? ""];
  if (handler === undefined) {
    emit({ id: request.id, ok: false, error: `unknown command ${String(request.cmd)}` });
    return;
  }
  void Promise.resolve()
    .then(handler)
    .then(
      (result) => emit({ id: request.id, ok: true, ...result }),
      (err: unknown) => emit({ id: request.id, ok: false, error: err instanceof Error ? err.message : String(err) }),
    );
}).on("close", () => {
  // The harness went away: leave nothing behind.
  void dispose().finally(() => process.exit(0));
});

emit({ event: "ready" });
