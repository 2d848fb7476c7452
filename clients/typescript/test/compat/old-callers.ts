/**
 * Compile-only fixture: the ways the cloud's existing code calls LiveKitGrpcClient (its
 * LiveKitManager and SpeakerManager, MentraOS cloud at 17322bbd), written anew here as call
 * patterns, type-checked by test/package/pack.test.ts against the *packed* package's types with the
 * cloud's compiler settings (tsconfig.cloud.json) and with node16 resolution (tsconfig.node16.json).
 * Nothing here runs; the run-time behaviour of the same calls is tested in test/integration/legacy.test.ts.
 */
import LiveKitGrpcClient, { LiveKitGrpcClient as NamedLiveKitGrpcClient } from "@mentra/livekit-bridge-client";
import pino, { type Logger } from "pino";

// --- the cloud's shapes, as far as the client sees them ---------------------------------------------

class AudioManager {
  readonly received: Buffer[] = [];
  // The cloud's signature: async, loosely typed, with a second parameter.
  async processAudioData(audioData: ArrayBuffer | any, source: "livekit" | "udp" = "livekit"): Promise<void> {
    if (source === "livekit") {
      this.received.push(audioData as Buffer);
    }
  }
}

class MicrophoneManager {
  isEnabled(): boolean {
    return true;
  }
}

class UserSession {
  public readonly logger: Logger;
  public audioManager: AudioManager;
  public microphoneManager = new MicrophoneManager();
  public liveKitManager: LiveKitManager;

  constructor(public readonly userId: string) {
    this.logger = pino({ level: "silent" }).child({ userId });
    this.audioManager = new AudioManager();
    this.liveKitManager = new LiveKitManager(this);
  }
}

/** The old module's (non-exported) PlayAudioEvent interface, which callers declared handlers against. */
interface OldPlayAudioEvent {
  type: "STARTED" | "PROGRESS" | "COMPLETED" | "FAILED";
  requestId: string;
  durationMs?: number;
  positionMs?: number;
  error?: string;
  metadata?: Record<string, string>;
}

/** @mentra/sdk's AudioPlayRequest / AudioStopRequest, the fields SpeakerManager reads. */
interface AudioPlayRequest {
  requestId: string;
  audioUrl: string;
  volume?: number;
  stopOtherAudio?: boolean;
  trackId?: number;
}
interface AudioStopRequest {
  packageName: string;
}

// --- LiveKitManager's calls ------------------------------------------------------------------------

class LiveKitManager {
  private bridgeClient: LiveKitGrpcClient | null = null;
  private lastRejoinAttemptAt: number | null = null;

  constructor(private readonly session: UserSession) {}

  getRoomName(): string {
    return this.session.userId;
  }

  getUrl(): string {
    return process.env["LIVEKIT_URL"] || "";
  }

  async mintAgentBridgeToken(): Promise<string | null> {
    return "token";
  }

  async startBridgeSubscriber(info: { url: string; roomName: string }): Promise<void> {
    if (this.bridgeClient && this.bridgeClient.isConnected()) {
      return;
    }
    const targetIdentity = this.session.userId;
    this.bridgeClient = new LiveKitGrpcClient(this.session);
    const bridgeToken = await this.mintAgentBridgeToken();
    if (!bridgeToken) {
      return;
    }
    await this.bridgeClient.connect({ url: info.url, roomName: info.roomName, token: bridgeToken, targetIdentity });
  }

  public getBridgeClient(): LiveKitGrpcClient | null {
    return this.bridgeClient;
  }

  public async ensureBridgeConnected(): Promise<void> {
    if (this.bridgeClient && this.bridgeClient.isConnected()) return;
    if (this.bridgeClient && this.bridgeClient.isConnecting()) return;
    await this.startBridgeSubscriber({ url: this.getUrl(), roomName: this.getRoomName() });
  }

  public onMicStateChange(): void {
    const shouldSubscribe = this.session.microphoneManager.isEnabled();
    this.ensureBridgeConnected()
      .then(() => {
        if (!this.bridgeClient || !this.bridgeClient.isConnected()) return;
        if (shouldSubscribe) {
          this.bridgeClient.enableSubscribe(this.session.userId);
        } else {
          this.bridgeClient.disableSubscribe();
        }
      })
      .catch(() => undefined);
  }

  public dispose(): void {
    if (this.bridgeClient) {
      this.bridgeClient.dispose(); // fire and forget, in a void method
      this.bridgeClient = null;
    }
  }

  /** As the cloud wrote it (through `any`), and typed: the old snake_case fields must be there. */
  public async getBridgeStatus(): Promise<{
    connected: boolean;
    participant_id?: string;
    participant_count?: number;
    last_disconnect_at?: number;
    last_disconnect_reason?: string;
    server_version?: string;
  } | null> {
    if (!this.bridgeClient) return null;
    const viaAny = await (this.bridgeClient as any).getStatus();
    void viaAny;
    const status = await this.bridgeClient.getStatus();
    return status ?? null;
  }

  public async rejoinBridge(): Promise<void> {
    const now = Date.now();
    if (this.lastRejoinAttemptAt && now - this.lastRejoinAttemptAt < 2000) return;
    this.lastRejoinAttemptAt = now;
    if (!this.bridgeClient) {
      this.bridgeClient = new LiveKitGrpcClient(this.session);
    }
    const token = await this.mintAgentBridgeToken();
    if (!token) return;
    const params = { url: this.getUrl(), roomName: this.getRoomName(), token, targetIdentity: this.session.userId };
    await (this.bridgeClient as any).rejoin(params);
    await this.bridgeClient.rejoin(params); // and typed: a public method now
  }
}

// --- SpeakerManager's calls ------------------------------------------------------------------------

class SpeakerManager {
  constructor(private readonly session: UserSession) {
    const bridge = this.session.liveKitManager.getBridgeClient();
    bridge?.onEvent((evt: any) => this.handleBridgeEvent(evt));
  }

  async start(msg: AudioPlayRequest): Promise<void> {
    const bridge = this.session.liveKitManager.getBridgeClient();
    if (!bridge) return;
    bridge.playUrl({
      requestId: msg.requestId,
      url: msg.audioUrl,
      volume: msg.volume,
      stopOther: msg.stopOtherAudio,
      trackId: msg.trackId ?? 0,
    });
  }

  async stop(msg: AudioStopRequest): Promise<void> {
    void msg.packageName;
    const bridge = this.session.liveKitManager.getBridgeClient();
    if (!bridge) return;
    bridge.stopPlayback();
  }

  handleBridgeEvent(evt: any): void {
    if (!evt || typeof evt !== "object") return;
  }
}

// --- the rest of the old public surface ------------------------------------------------------------

function otherCalls(session: UserSession, pcm: Buffer): void {
  const client: NamedLiveKitGrpcClient = new NamedLiveKitGrpcClient(session, "livekit-bridge:9090");
  client.sendAudioChunk(pcm);
  client.onPlayAudioEvent("req-1", (evt: OldPlayAudioEvent) => {
    if (evt.type === "COMPLETED" || evt.type === "FAILED") {
      void evt.durationMs;
    }
  });
  client.playAudio({ requestId: "req-1", url: "https://example.invalid/a.mp3", volume: 0.5, stopOther: false, trackId: 2 });
  client.stopAudio("req-1");
  client.stopAudio();
  client.stopPlayback("req-1");
  client.onEvent(() => undefined);
  const connected: boolean = client.isConnected() && !client.isConnecting();
  void connected;
  void client.disconnect();
  void new SpeakerManager(session);

  // The types are the package's, not `any`: a call without a token must not compile.
  // @ts-expect-error token is required
  void client.connect({ url: "", roomName: "room" });
}

export { otherCalls };
