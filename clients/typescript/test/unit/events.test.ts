import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as protoLoader from "@grpc/proto-loader";
import { int64ToNumber, isTerminal, playAudioEventTypes, type RawPlayAudioEvent, toPlayAudioEvent } from "../../src/events";
import { defaultProtoPath, EnumNames, LOADER_OPTIONS, loadBridgeProto } from "../../src/proto";

const { definition } = loadBridgeProto();
const types = playAudioEventTypes(definition);
const WIRE_TYPES = [
  ["STARTED", 0],
  ["PROGRESS", 1],
  ["COMPLETED", 2],
  ["FAILED", 3],
] as const;

interface Method {
  responseSerialize(value: object): Buffer;
  responseDeserialize(bytes: Buffer): RawPlayAudioEvent;
}

/** The PlayAudio method of the proto loaded with `options`: its (de)serializers are the real wire code. */
function playAudioMethod(options: protoLoader.Options): Method {
  const service = protoLoader.loadSync(defaultProtoPath(), options)["mentra.livekit.bridge.LiveKitBridge"];
  const method = service !== undefined && "PlayAudio" in service ? service["PlayAudio"] : undefined;
  assert.ok(method !== undefined && "responseSerialize" in method);
  return method;
}

describe("PlayAudio event mapping", () => {
  test("the EventType table comes from the proto and maps names, numbers and numeric strings", () => {
    assert.equal(types.size, 4);
    for (const [name, number] of WIRE_TYPES) {
      assert.equal(types.nameOf(name), name);
      assert.equal(types.nameOf(number), name);
      assert.equal(types.nameOf(String(number)), name);
    }
    for (const unknown of [4, -1, 1.5, "BUFFERING", "", null, undefined, {}]) {
      // eslint-disable-next-line @typescript-eslint/no-base-to-string -- only a label: `{}` printing as [object Object] is fine
      assert.equal(types.nameOf(unknown), undefined, `${String(unknown)} is not an event type`);
    }
  });

  // The old client's bug: it expected numbers, the loader gave names, every event became FAILED.
  for (const [label, options] of [
    ["the cloud's options (enums: String, longs: String)", LOADER_OPTIONS],
    ["the loader defaults (enum numbers, Long objects)", { keepCase: true }],
    ["enums: String with longs: Number", { keepCase: true, enums: String, longs: Number }],
    ["enum numbers with longs: String and defaults", { keepCase: true, longs: String, defaults: true }],
  ] as const) {
    test(`every event type survives the wire with ${label}`, () => {
      const writer = playAudioMethod(LOADER_OPTIONS);
      const reader = playAudioMethod(options);
      for (const [name] of WIRE_TYPES) {
        const bytes = writer.responseSerialize({
          type: name,
          request_id: "req-1",
          duration_ms: "90061",
          position_ms: "1500",
          error: name === "FAILED" ? "fetch_failed: 404" : "",
          metadata: { code: "x" },
        });
        const event = toPlayAudioEvent(reader.responseDeserialize(bytes), types, "fallback");
        assert.deepEqual(event, {
          type: name,
          requestId: "req-1",
          durationMs: 90061,
          positionMs: 1500,
          metadata: { code: "x" },
          ...(name === "FAILED" ? { error: "fetch_failed: 404" } : {}),
        });
      }
    });
  }

  test("an event of a type the proto does not define is ignored, not turned into FAILED", () => {
    assert.equal(toPlayAudioEvent({ type: 7, request_id: "r" }, types, "r"), undefined);
    assert.equal(toPlayAudioEvent({ type: "PAUSED", request_id: "r" }, types, "r"), undefined);
  });

  test("missing fields read as proto defaults and the request id falls back to the caller's", () => {
    assert.deepEqual(toPlayAudioEvent({ type: "STARTED" }, types, "mine"), {
      type: "STARTED",
      requestId: "mine",
      durationMs: 0,
      positionMs: 0,
      metadata: {},
    });
  });

  test("only COMPLETED and FAILED are terminal", () => {
    assert.deepEqual(
      WIRE_TYPES.map(([name]) => isTerminal(name)),
      [false, false, true, true],
    );
  });

  test("int64 values read from every shape a loader produces", () => {
    assert.equal(int64ToNumber("1700000000123"), 1700000000123);
    assert.equal(int64ToNumber(42), 42);
    assert.equal(int64ToNumber(42n), 42);
    assert.equal(int64ToNumber({ toNumber: () => 7 }), 7);
    assert.equal(int64ToNumber(undefined), 0);
    assert.equal(int64ToNumber("not a number"), 0);
  });

  test("EnumNames knows exactly the values it was built from", () => {
    const names = new EnumNames([
      { name: "A", number: 0 },
      { name: "B", number: 5 },
    ]);
    assert.equal(names.nameOf(5), "B");
    assert.equal(names.nameOf("5"), "B");
    assert.equal(names.nameOf(1), undefined);
  });
});
