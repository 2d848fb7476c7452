/**
 * A loopback TCP relay in front of the LiveKit server's signalling port, which a test can shut: the
 * real bridge then cannot reach LiveKit for new JoinRooms (each fails at once, with the bridge's own
 * "could not connect" error) while it stays up and reachable, and connections already relayed (the
 * signalling of sessions in their rooms) go on. Each connection the gate refuses is timestamped: it
 * is the moment a JoinRoom the bridge is serving tried LiveKit.
 */
import net from "node:net";

export class SignalGate {
  /** performance-clock times of the connections refused while shut. */
  readonly refusedAt: number[] = [];
  private refusing = false;
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /** A gate on 127.0.0.1 relaying to the LiveKit server at `livekitUrl` (ws://127.0.0.1:PORT). */
  static async start(livekitUrl: string): Promise<SignalGate> {
    const target = new URL(livekitUrl);
    const targetPort = Number(target.port);
    // eslint-disable-next-line prefer-const -- assigned once below, after the handler that reads it is built
    let gate: SignalGate | undefined;
    const server = net.createServer((client) => {
      if (gate === undefined || gate.refusing) {
        gate?.refusedAt.push(performance.now());
        client.destroy();
        return;
      }
      const upstream = net.connect(targetPort, target.hostname);
      for (const socket of [client, upstream]) {
        gate.sockets.add(socket);
        socket.once("close", () => gate?.sockets.delete(socket));
        socket.on("error", () => undefined); // the other side is destroyed with it on 'close'
      }
      client.once("close", () => upstream.destroy());
      upstream.once("close", () => client.destroy());
      client.pipe(upstream).pipe(client);
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const address = server.address();
        if (address !== null && typeof address === "object") {
          resolve(address.port);
        } else {
          reject(new Error("no port"));
        }
      });
    });
    gate = new SignalGate(server, port);
    return gate;
  }

  /** The LiveKit URL to give the bridge: the gate's. */
  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** New connections are refused (accepted and closed at once, timestamped); relayed ones go on. */
  shut(): void {
    this.refusing = true;
  }

  /** New connections are relayed again. */
  open(): void {
    this.refusing = false;
  }

  /** Stops listening and cuts every relayed connection. */
  async stop(): Promise<void> {
    for (const socket of this.sockets) {
      socket.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
