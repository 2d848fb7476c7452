// The ESM twin of consumer.cjs: default and named imports of the packed package, the options API
// and the old one, against the real bridge. Prints one JSON line; exits non-zero on any failure.
import assert from "node:assert/strict";
import grpc from "@grpc/grpc-js";
import LiveKitGrpcClient, { BridgeChannel, LiveKitGrpcClient as Named, sharedBridgeChannel } from "@mentra/livekit-bridge-client";
import { createRequire } from "node:module";

const { BRIDGE_ADDRESS, LIVEKIT_URL, ROOM, TOKEN, USER, MEDIA_URL } = process.env;
const runtime = typeof Bun === "undefined" ? `node ${process.version}` : `bun ${Bun.version}`;

assert.equal(LiveKitGrpcClient, Named, "the default export is the class");
const required = createRequire(import.meta.url)("@mentra/livekit-bridge-client");
assert.equal(required.LiveKitGrpcClient, LiveKitGrpcClient, "import and require share one implementation");

const channel = new BridgeChannel({ address: BRIDGE_ADDRESS, credentials: grpc.credentials.createInsecure() });
const events = [];
const client = new LiveKitGrpcClient({ channel, userId: USER });
await client.connect({ url: LIVEKIT_URL, roomName: ROOM, token: TOKEN });
assert.equal((await client.getStatus()).connected, true);
const last = await client.playAudio({ requestId: "pkg-play-esm", url: MEDIA_URL }, (event) => events.push(event.type));
assert.equal(last.type, "COMPLETED", `playback: ${JSON.stringify(last)}`);
await client.dispose();
channel.close();
sharedBridgeChannel(BRIDGE_ADDRESS).close();
console.log(JSON.stringify({ ok: true, style: "esm", runtime, events }));
