/**
 * The package as people get it: `npm pack` from a clean copy of the sources (its prepack builds),
 * installed into an empty temporary project, where the old callers' code is type-checked against
 * the published types and CommonJS and ESM scripts run against the real bridge and LiveKit.
 * Under Bun (`npm run test:bun`) the scripts run with Bun, since they run with this process's runtime.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { sine, writeWav } from "../support/audio";
import { IntegrationEnv, newRoom } from "../support/env";
import { PACKAGE_ROOT } from "../support/process";

const REPO_ROOT = path.resolve(PACKAGE_ROOT, "..", "..");
const PACKAGE_NAME = "@mentra/livekit-bridge-client";

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment without npm's run-script variables (npm_config_*, ...), which would steer a nested npm. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.toLowerCase().startsWith("npm_")) {
      env[key] = value;
    }
  }
  return { ...env, ...extra };
}

/** Runs a command to its end (bounded), without blocking the event loop (the bridge's output must keep flowing). */
function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = cleanEnv(), timeoutMs = 180_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (data: Buffer) => (stdout += data.toString()));
    child.stderr.on("data", (data: Buffer) => (stderr += data.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} ${args.join(" ")} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function ok(ran: Ran, what: string): string {
  assert.equal(ran.code, 0, `${what} failed (exit ${ran.code}):\n${ran.stdout}\n${ran.stderr}`);
  return ran.stdout;
}

/** The package's sources as a fresh checkout has them: no dist/, no generated code, node_modules linked. */
function cleanCopy(into: string): string {
  const pkg = path.join(into, "clients", "typescript");
  mkdirSync(pkg, { recursive: true });
  cpSync(path.join(REPO_ROOT, "proto"), path.join(into, "proto"), { recursive: true });
  for (const entry of ["package.json", "package-lock.json", "tsconfig.json", "tsconfig.build.json", "LICENSE", "README.md", "scripts", "src"]) {
    cpSync(path.join(PACKAGE_ROOT, entry), path.join(pkg, entry), {
      recursive: true,
      filter: (source) => !source.includes(`${path.sep}generated`),
    });
  }
  symlinkSync(path.join(PACKAGE_ROOT, "node_modules"), path.join(pkg, "node_modules"), "dir");
  return pkg;
}

describe("the packed package, installed into an empty project", () => {
  let work = "";
  let tarball = "";
  let packedFiles: string[] = [];
  let consumer = "";
  let env: IntegrationEnv | undefined;
  let mediaUrl = "";
  let startError: unknown;

  before(async () => {
    try {
      work = mkdtempSync(path.join(os.tmpdir(), "lkb-pack-"));
      const copy = cleanCopy(path.join(work, "repo"));
      const packed = ok(await run("npm", ["pack", "--json", "--pack-destination", work], copy), "npm pack");
      // npm prints the prepack build's output first; the JSON report is the last thing on stdout.
      const report = JSON.parse(packed.slice(packed.lastIndexOf("\n[\n") + 1)) as Array<{ filename: string; files: Array<{ path: string }> }>;
      tarball = path.join(work, report[0]?.filename ?? "?");
      packedFiles = report[0]?.files.map((file) => file.path) ?? [];

      consumer = path.join(work, "consumer");
      mkdirSync(consumer);
      writeFileSync(path.join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true }));
      const dev = (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, "package.json"), "utf8")) as { devDependencies: Record<string, string> })
        .devDependencies;
      // The project brings its own grpc-js (the peer dependency), pino and @types/node for the
      // type check; the versions the repository tests with, so npm's cache already has them.
      const wanted = ["@grpc/grpc-js", "pino", "@types/node"].map((name) => `${name}@${dev[name]}`);
      ok(
        await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", tarball, ...wanted], consumer),
        "npm install of the tarball",
      );
      for (const file of ["old-callers.ts", "esm-consumer.mts", "tsconfig.cloud.json", "tsconfig.node16.json", "consumer.cjs", "consumer.mjs"]) {
        cpSync(path.join(PACKAGE_ROOT, "test", "compat", file), path.join(consumer, file));
      }

      env = await IntegrationEnv.start();
      const media = path.join(work, "media");
      mkdirSync(media);
      writeWav(path.join(media, "tone.wav"), sine(440, 0.4, 16000), 16000);
      mediaUrl = `${await env.driver.serveDir(media)}/tone.wav`;
    } catch (err) {
      startError = err; // every test then fails with it
    }
  });

  after(async () => {
    await env?.close();
    if (work) {
      rmSync(work, { recursive: true, force: true });
    }
  });

  function ready(): IntegrationEnv {
    if (env === undefined || startError !== undefined) {
      throw startError instanceof Error ? startError : new Error("the package test did not set up", { cause: startError });
    }
    return env;
  }

  test("npm pack builds from a clean tree (prepack): compiled code, types, ESM entry, proto and licence; no tests", () => {
    ready();
    for (const file of [
      "package.json",
      "LICENSE",
      "dist/src/index.js",
      "dist/src/index.d.ts",
      "dist/src/client.js",
      "dist/src/legacy.d.ts",
      "dist/esm/index.mjs",
      "dist/esm/index.d.mts",
      "dist/proto/livekit_bridge.proto",
    ]) {
      assert.ok(packedFiles.includes(file), `${file} is in the tarball (${packedFiles.length} files)`);
    }
    assert.deepEqual(
      packedFiles.filter((file) => file.startsWith("dist/test") || file.endsWith(".map") || /^src\//.test(file)),
      [],
      "no tests, source maps or TypeScript sources",
    );
    const installed = JSON.parse(readFileSync(path.join(consumer, "node_modules", ...PACKAGE_NAME.split("/"), "package.json"), "utf8")) as {
      private?: boolean;
      license?: string;
      peerDependencies?: Record<string, string>;
      dependencies?: Record<string, string>;
      exports?: unknown;
      engines?: Record<string, string>;
    };
    assert.equal(installed.private, undefined);
    assert.equal(installed.license, "MIT");
    assert.match(installed.peerDependencies?.["@grpc/grpc-js"] ?? "", /^\^1\./, "grpc-js is a peer dependency with a range");
    assert.equal(installed.dependencies?.["@grpc/grpc-js"], undefined);
    assert.ok(installed.exports !== undefined && installed.engines?.["node"] !== undefined);
    assert.equal(
      existsSync(path.join(consumer, "node_modules", ...PACKAGE_NAME.split("/"), "node_modules", "@grpc", "grpc-js")),
      false,
      "one copy of grpc-js: the project's",
    );
  });

  test("the old callers' code type-checks against the published types (the cloud's settings, and node16 with the exports map)", async () => {
    ready();
    const tsc = path.join(PACKAGE_ROOT, "node_modules", "typescript", "bin", "tsc");
    for (const config of ["tsconfig.cloud.json", "tsconfig.node16.json"]) {
      ok(await run(process.execPath, [tsc, "-p", config], consumer, cleanEnv(), 120_000), `tsc -p ${config}`);
    }
  });

  for (const script of ["consumer.cjs", "consumer.mjs"]) {
    test(`${script} runs against the real bridge from the installed package (join, status, playback)`, async () => {
      const { driver, bridge } = ready();
      const user = `pkg-${script.replace(".", "-")}`;
      const room = newRoom();
      const scriptEnv = cleanEnv({
        BRIDGE_ADDRESS: bridge.address,
        LIVEKIT_URL: driver.url,
        ROOM: room,
        USER: user,
        TOKEN: await driver.token(`bridge-${user}`, room),
        MEDIA_URL: mediaUrl,
      });
      const out = ok(await run(process.execPath, [script], consumer, scriptEnv, 60_000), script);
      const result = JSON.parse(out.trim().split("\n").at(-1) ?? "{}") as { ok?: boolean; runtime?: string; events?: string[] };
      console.log(`${script}: ${JSON.stringify(result)}`);
      assert.equal(result.ok, true);
      assert.equal(result.events?.[0], "STARTED");
      assert.equal(result.events?.at(-1), "COMPLETED");
      assert.match(result.runtime ?? "", typeof (globalThis as { Bun?: unknown }).Bun === "undefined" ? /^node / : /^bun /);
    });
  }
});
