/**
 * The integration harness itself: without BRIDGE_PYTHON the integration tests fail and say why;
 * they are never skipped (README, "Developing it").
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { BridgeProcess } from "../support/bridge-process";
import { IntegrationEnv } from "../support/env";
import { PACKAGE_ROOT, PYTHON_HINT } from "../support/process";

/** Runs `body` with BRIDGE_PYTHON unset, then puts it back. */
async function withoutBridgePython(body: () => Promise<void>): Promise<void> {
  const saved = process.env["BRIDGE_PYTHON"];
  delete process.env["BRIDGE_PYTHON"];
  try {
    await body();
  } finally {
    if (saved !== undefined) {
      process.env["BRIDGE_PYTHON"] = saved;
    }
  }
}

function saysBridgePythonIsMissing(err: unknown): boolean {
  assert.ok(err instanceof Error);
  assert.match(err.message, /BRIDGE_PYTHON is not set/);
  assert.ok(err.message.includes(PYTHON_HINT), `the hint is in the message: ${err.message}`);
  return true;
}

test("without BRIDGE_PYTHON, starting the integration environment (or the bridge alone) fails with the hint", async () => {
  await withoutBridgePython(async () => {
    await assert.rejects(IntegrationEnv.start(), saysBridgePythonIsMissing);
    await assert.rejects(BridgeProcess.start({ livekitUrl: "ws://127.0.0.1:7880" }), saysBridgePythonIsMissing);
  });
});

test("the integration and package tests contain no skip or todo: a missing prerequisite is a failure", () => {
  // node:test's { skip } / { todo } / t.skip() / t.todo(), and bun:test's test.skip() / test.todo().
  const skipping = /\.skip\s*\(|\bskip\s*:|\.todo\s*\(|\btodo\s*:|\.skipIf\s*\(/;
  const files = ["integration", "package"].flatMap((dir) =>
    readdirSync(path.join(PACKAGE_ROOT, "test", dir))
      .filter((name) => name.endsWith(".ts"))
      .map((name) => path.join(PACKAGE_ROOT, "test", dir, name)),
  );
  assert.ok(files.length >= 5, `found the test sources: ${files.join(", ")}`);
  for (const file of files) {
    const lines = readFileSync(file, "utf8").split("\n");
    const hits = lines.flatMap((line, i) => (skipping.test(line) ? [`${path.basename(file)}:${i + 1}: ${line.trim()}`] : []));
    assert.deepEqual(hits, [], "no test is skipped or left as todo");
  }
});
