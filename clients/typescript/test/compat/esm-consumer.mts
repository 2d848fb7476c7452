/**
 * Compile-only fixture: an ES module importing the package (default and named exports), type-checked
 * by test/package/pack.test.ts with node16 resolution, where the `import` condition of the
 * package's exports map (dist/esm/index.d.mts) applies.
 */
import LiveKitGrpcClient, { BridgeChannel, LiveKitGrpcClient as Named, type PlayAudioEvent } from "@mentra/livekit-bridge-client";

const channel = new BridgeChannel({ address: "127.0.0.1:1" });
const client: LiveKitGrpcClient = new LiveKitGrpcClient({ channel, userId: "u" });
const same: typeof Named = LiveKitGrpcClient;
const done: Promise<PlayAudioEvent> = client.playAudio({ requestId: "r", url: "https://example.invalid/a.mp3" });
void same;
void done;
// @ts-expect-error the class is the default export, not the module namespace
void LiveKitGrpcClient.BridgeChannel;
