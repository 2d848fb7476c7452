// Run by test/package/pack.test.ts in an empty project where only the packed tarball (and the
// project's own @grpc/grpc-js) is installed: the old constructor, require() style, against the
// real bridge. Prints one JSON line; exits non-zero on any failure.
const assert = require("node:assert/strict");
const grpc = require("@grpc/grpc-js");
const pkg = require("@mentra/livekit-bridge-client");

const { BRIDGE_ADDRESS, LIVEKIT_URL, ROOM, TOKEN, USER, MEDIA_URL } = process.env;
const runtime = typeof Bun === "undefined" ? `node ${process.version}` : `bun ${Bun.version}`;

async function main() {
  const LiveKitGrpcClient = pkg.default;
  assert.equal(LiveKitGrpcClient, pkg.LiveKitGrpcClient, "default and named export are the same class");
  // The project's own grpc-js credentials are accepted: there is one copy of grpc-js (a peer dependency).
  const channel = new pkg.BridgeChannel({ address: BRIDGE_ADDRESS, credentials: grpc.credentials.createInsecure() });
  assert.equal((await channel.healthCheck()).status, "SERVING");
  channel.close();

  const quiet = { debug() {}, info() {}, warn() {}, error() {} };
  const session = {
    userId: USER,
    logger: { ...quiet, child: () => quiet },
    audioManager: { processAudioData: () => undefined },
  };
  const client = new LiveKitGrpcClient(session, BRIDGE_ADDRESS);
  await client.connect({ url: LIVEKIT_URL, roomName: ROOM, token: TOKEN, targetIdentity: USER });
  assert.equal(client.isConnected(), true);
  const status = await client.getStatus();
  assert.equal(status.connected, true);
  const events = [];
  const done = new Promise((resolve) => {
    client.onPlayAudioEvent("pkg-play", (event) => {
      events.push(event.type);
      if (event.type === "COMPLETED" || event.type === "FAILED") resolve(event);
    });
  });
  client.playUrl({ requestId: "pkg-play", url: MEDIA_URL });
  const last = await done;
  assert.equal(last.type, "COMPLETED", `playback: ${JSON.stringify(last)}`);
  client.dispose();
  await client.dispose();
  pkg.sharedBridgeChannel(BRIDGE_ADDRESS).close();
  console.log(JSON.stringify({ ok: true, style: "cjs", runtime, participant_id: status.participant_id, events }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
