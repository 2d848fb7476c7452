/* eslint-disable @typescript-eslint/no-floating-promises -- these tests call the legacy API as the cloud's old callers do: fire and forget */
/**
 * The old callers' API at run time, against the real bridge and a real LiveKit server: a client
 * built from a UserSession, called the way the cloud's LiveKitManager and SpeakerManager call it.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import LiveKitGrpcClient, { type LegacyBridgeEvent, type Logger, type PlayAudioEvent, sharedBridgeChannel } from "../../src/index";
import { sine, writeWav } from "../support/audio";
import { IntegrationEnv, newRoom, startedEnv } from "../support/env";
import { sleep, waitFor } from "../support/process";
import { packetPayload } from "../support/room-driver";

const quiet: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

/** The parts of the cloud's UserSession the old constructor reads. */
class UserSession {
  readonly logger = { ...quiet, child: (): Logger => quiet };
  readonly audioManager = {
    received: [] as Buffer[],
    // eslint-disable-next-line @typescript-eslint/require-await -- async like the cloud's AudioManager
    processAudioData: async (pcm: Buffer): Promise<void> => {
      this.audioManager.received.push(pcm);
    },
  };
  constructor(readonly userId: string) {}
}

function total(buffers: Buffer[]): number {
  return buffers.reduce((sum, buffer) => sum + buffer.length, 0);
}

describe("the old LiveKitGrpcClient API against the real bridge", () => {
  let env: IntegrationEnv | undefined;
  let startError: unknown;
  let media = "";
  let mediaUrl = "";
  const clients: LiveKitGrpcClient[] = [];

  before(async () => {
    try {
      env = await IntegrationEnv.start();
      media = mkdtempSync(path.join(os.tmpdir(), "lkb-legacy-media-"));
      writeWav(path.join(media, "short.wav"), sine(660, 0.8, 16000), 16000);
      writeWav(path.join(media, "long.wav"), sine(330, 8, 16000), 16000);
      mediaUrl = await env.driver.serveDir(media);
    } catch (err) {
      startError = err;
    }
  });
  after(async () => {
    try {
      await Promise.all(clients.map((client) => client.dispose()));
      if (env !== undefined) {
        sharedBridgeChannel(env.bridge.address).close();
      }
      await env?.close();
    } finally {
      if (media) {
        rmSync(media, { recursive: true, force: true });
      }
    }
  });

  function ready(): IntegrationEnv {
    return startedEnv(env, startError);
  }

  /** LiveKitManager.startBridgeSubscriber: a client from the session, connect() with the agent's token. */
  async function startBridgeSubscriber(session: UserSession, room: string): Promise<LiveKitGrpcClient> {
    const { driver, bridge } = ready();
    const client = new LiveKitGrpcClient(session, bridge.address);
    clients.push(client);
    const token = await driver.token(`cloud-agent:${session.userId}`, room);
    await client.connect({ url: driver.url, roomName: room, token, targetIdentity: session.userId });
    return client;
  }

  test("room audio reaches the session's audio manager; playback events reach onPlayAudioEvent and onEvent with their real types", async () => {
    const { driver } = ready();
    const user = "legacy-user-1";
    const room = newRoom();
    await driver.connect("phone-l1", user, room);
    const session = new UserSession(user);
    const client = await startBridgeSubscriber(session, room);
    assert.equal(client.isConnected(), true);
    await driver.waitParticipant("phone-l1", `cloud-agent:${user}`);

    await driver.sendPackets("phone-l1", 10, 20, 3200, 10);
    const expected = Buffer.concat(Array.from({ length: 20 }, (_, i) => packetPayload(10 + i, 3200)));
    await waitFor(() => total(session.audioManager.received) >= expected.length, 10_000, "the phone's audio at the audio manager");
    assert.ok(Buffer.concat(session.audioManager.received).equals(expected), "byte-exact, in order");

    // SpeakerManager: onEvent once, then playUrl; LiveKitManager-era callers: onPlayAudioEvent(requestId).
    const legacy: LegacyBridgeEvent[] = [];
    client.onEvent((event) => legacy.push(event));
    const events: PlayAudioEvent[] = [];
    client.onPlayAudioEvent("legacy-play-1", (event) => events.push(event));
    client.playUrl({ requestId: "legacy-play-1", url: `${mediaUrl}/short.wav`, volume: undefined, stopOther: undefined, trackId: 0 });
    await waitFor(() => events.some((e) => e.type === "COMPLETED" || e.type === "FAILED"), 15_000, "the playback to end");
    assert.equal(events[0]?.type, "STARTED");
    assert.ok(events.some((e) => e.type === "PROGRESS"), "PROGRESS events, not FAILED");
    assert.equal(events.at(-1)?.type, "COMPLETED", JSON.stringify(events.at(-1)));
    assert.ok(Math.abs((events.at(-1)?.durationMs ?? 0) - 800) <= 40, `duration ${events.at(-1)?.durationMs} ms`);
    assert.deepEqual(
      legacy.map((e) => [e.type, e.type === "play_complete" ? e.success : e.url]),
      [
        ["play_started", `${mediaUrl}/short.wav`],
        ["play_complete", true],
      ],
    );

    // stopPlayback() with no id stops everything: the long playback ends FAILED "stopped".
    const stopped: PlayAudioEvent[] = [];
    client.onPlayAudioEvent("legacy-play-2", (event) => stopped.push(event));
    client.playAudio({ requestId: "legacy-play-2", url: `${mediaUrl}/long.wav` });
    await waitFor(() => stopped.some((e) => e.type === "PROGRESS"), 10_000, "the long playback to play");
    client.stopPlayback();
    await waitFor(() => stopped.some((e) => e.type === "FAILED"), 5_000, "the stop");
    assert.equal(stopped.at(-1)?.metadata["code"], "stopped");
    const complete = legacy.at(-1);
    assert.ok(complete?.type === "play_complete" && !complete.success && complete.code === "stopped");
    client.dispose();
    await driver.disconnect("phone-l1");
  });

  test("a second client for the same user (LiveKitManager replacing one that is not connected): the first goes idle, no flapping", async () => {
    const { bridge } = ready();
    const user = "legacy-user-3";
    const room = newRoom();
    const session = new UserSession(user);
    const first = await startBridgeSubscriber(session, room);
    await sleep(300); // its stream is attached
    const second = await startBridgeSubscriber(session, room);
    await waitFor(() => first.streamCounters.takeovers === 1, 5_000, "the first client to see the takeover");
    await sleep(2_000);
    assert.deepEqual([first.isConnected(), first.isConnecting(), first.streamCounters.reconnects], [false, false, 0]);
    assert.deepEqual([second.isConnected(), second.streamCounters.unexpectedEnds], [true, 0], "the second keeps the session");
    first.dispose();
    await first.dispose();
    await sleep(300);
    assert.equal(second.isConnected(), true, "disposing the first did not LeaveRoom the second's session");
    assert.equal((await second.getStatus()).connected, true);
    assert.ok(bridge.running);
    second.dispose();
  });

  test("rejoin(params) after a bridge restart, as LiveKitManager.rejoinBridge does: joined again, audio flows, no flapping", async () => {
    const { driver, bridge } = ready();
    const user = "legacy-user-2";
    const room = newRoom();
    await driver.connect("phone-l2", user, room);
    const session = new UserSession(user);
    const client = await startBridgeSubscriber(session, room);
    assert.equal((await client.getStatus()).connected, true);

    await bridge.kill();
    await waitFor(() => !client.isConnected(), 5_000, "the client to notice the crash");
    assert.equal(client.isConnecting(), true, "it says it is reconnecting, so the manager does not start a second client");
    const status = await client.getStatus(); // the old contract: resolves even now
    assert.deepEqual([status.connected, status.last_disconnect_reason], [false, "rpc_error"]);
    await bridge.restart();

    // The manager mints a fresh token and calls rejoin(params); the client may have re-joined on its own already.
    const token = await driver.token(`cloud-agent:${user}`, room);
    await client.rejoin({ url: driver.url, roomName: room, token, targetIdentity: user });
    assert.equal(client.isConnected(), true);
    const after = await client.getStatus();
    assert.equal(after.connected, true);
    assert.equal(after.participant_count >= 2, true, `participant_count ${after.participant_count}`);

    const endsBefore = client.streamCounters.unexpectedEnds;
    await sleep(1_500);
    assert.equal(client.streamCounters.unexpectedEnds, endsBefore, "no reconnects after the re-join");
    assert.equal(client.isConnected(), true);

    session.audioManager.received.length = 0;
    await driver.waitParticipant("phone-l2", `cloud-agent:${user}`);
    await driver.sendPackets("phone-l2", 50, 30, 3200, 50);
    await waitFor(() => session.audioManager.received.length >= 5, 10_000, "the phone's audio after the restart");
    client.dispose();
    await driver.disconnect("phone-l2");
  });
});
