/**
 * Everything an integration test needs, started for real: a LiveKit server with participants (the
 * room driver) and the Python bridge as a process, plus a channel and clients that are all torn
 * down by close(). Starting fails loudly, never skips: a missing BRIDGE_PYTHON is an error.
 */
import { randomUUID } from "node:crypto";
import { BridgeChannel, LiveKitGrpcClient, type LiveKitGrpcClientOptions } from "../../src/index";
import { describeError } from "../../src/logger";
import { BridgeProcess } from "./bridge-process";
import { RoomDriver } from "./room-driver";

export function newRoom(): string {
  return `room-${randomUUID().slice(0, 8)}`;
}

/**
 * The environment a suite's before() hook started, or the error it failed with: every test then
 * fails with that error (a failing hook would only cancel them).
 */
export function startedEnv(env: IntegrationEnv | undefined, startError: unknown): IntegrationEnv {
  if (env === undefined || startError !== undefined) {
    throw startError instanceof Error ? startError : new Error("the integration environment did not start", { cause: startError });
  }
  return env;
}

export class IntegrationEnv {
  private readonly clients = new Set<LiveKitGrpcClient>();

  private constructor(
    readonly driver: RoomDriver,
    readonly bridge: BridgeProcess,
    readonly channel: BridgeChannel,
  ) {}

  static async start(bridgeEnv: Record<string, string> = {}): Promise<IntegrationEnv> {
    const driver = await RoomDriver.start();
    let bridge: BridgeProcess;
    try {
      bridge = await BridgeProcess.start({ livekitUrl: driver.url, env: bridgeEnv });
    } catch (err) {
      await driver.close();
      throw err;
    }
    let channel: BridgeChannel;
    try {
      channel = new BridgeChannel({ address: bridge.address });
    } catch (err) {
      // e.g. no dist/proto after a failed build: without this the bridge and the driver outlive the test run
      await bridge.stop();
      await driver.close();
      throw err;
    }
    return new IntegrationEnv(driver, bridge, channel);
  }

  client(options: LiveKitGrpcClientOptions = {}): LiveKitGrpcClient {
    const client = new LiveKitGrpcClient({ channel: this.channel, ...options });
    this.clients.add(client);
    return client;
  }

  /** connect() the way the cloud does: the bridge joins as `bridge-<user>` and listens to `user`. */
  async connect(client: LiveKitGrpcClient, user: string, room: string): Promise<void> {
    const token = await this.driver.token(`bridge-${user}`, room);
    try {
      await client.connect({ userId: user, roomName: room, token, url: this.driver.url });
    } catch (err) {
      // A join these tests expect to succeed failed: the LiveKit server's log says why, from its side
      // (CI once saw its signal handshake answer 500, with nothing else to go on).
      const log = await this.driver.serverLog().catch((logErr: unknown) => `<no log: ${String(logErr)}>`);
      throw new Error(`${describeError(err)}\nLiveKit server, last log lines:\n${log}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    const errors: unknown[] = [];
    for (const client of this.clients) {
      await client.dispose().catch((err: unknown) => errors.push(err));
    }
    this.channel.close();
    await this.bridge.stop().catch((err: unknown) => errors.push(err));
    await this.driver.close().catch((err: unknown) => errors.push(err));
    if (errors.length > 0) {
      throw new AggregateError(errors, "integration teardown failed");
    }
  }
}
