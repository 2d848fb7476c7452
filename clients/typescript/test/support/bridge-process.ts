/** The Python bridge as a child process (`$BRIDGE_PYTHON -m bridge`) on a loopback port, killable and restartable. */
import { describeError } from "../../src/logger";
import { bridgePython, freePort, LineProcess, PACKAGE_ROOT, PYTHON_HINT } from "./process";

const READY_TIMEOUT_MS = 30_000;

export interface BridgeProcessOptions {
  livekitUrl: string;
  /** Extra environment (BRIDGE_* settings). */
  env?: Record<string, string>;
}

export class BridgeProcess {
  private proc: LineProcess | undefined;
  /** performance-clock time the current process logged that it listens. */
  readyAt = 0;

  private constructor(
    readonly port: number,
    private readonly options: BridgeProcessOptions,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.proc?.running ?? false;
  }

  static async start(options: BridgeProcessOptions): Promise<BridgeProcess> {
    const bridge = new BridgeProcess(await freePort(), options);
    await bridge.launch();
    return bridge;
  }

  /** SIGKILL: a crash, no graceful shutdown, the streams just break. */
  async kill(): Promise<void> {
    await this.proc?.kill();
  }

  /** Starts again on the same port; resolves once it listens (readyAt is set). */
  async restart(): Promise<void> {
    if (this.running) {
      await this.kill();
    }
    await this.launch();
  }

  async stop(): Promise<void> {
    await this.proc?.stop(5_000);
  }

  private async launch(): Promise<void> {
    const python = bridgePython();
    const proc = new LineProcess(python, ["-m", "bridge"], {
      cwd: PACKAGE_ROOT,
      env: {
        ...process.env,
        PYTHONUNBUFFERED: "1",
        PORT: String(this.port),
        BRIDGE_HOST: "127.0.0.1",
        LIVEKIT_URL: this.options.livekitUrl,
        // Playback fetches the test's files from a loopback HTTP server, which the bridge refuses by default.
        BRIDGE_FETCH_ALLOW_HOSTS: "127.0.0.1",
        BRIDGE_LOG_LEVEL: "INFO",
        ...this.options.env,
      },
    });
    this.proc = proc;
    try {
      await proc.waitForLine(new RegExp(`listening on 127\\.0\\.0\\.1:${this.port}\\b`), READY_TIMEOUT_MS);
      this.readyAt = performance.now();
    } catch (err) {
      await proc.kill();
      throw new Error(
        `could not start the bridge with \`${python} -m bridge\` (${describeError(err)}).\n${PYTHON_HINT}\n${proc.describe()}`,
        { cause: err },
      );
    }
  }

  /** The bridge's recent log lines, for failure messages. */
  describe(): string {
    return this.proc?.describe() ?? "not started";
  }
}
