// Build steps that involve the proto, run by `npm run build` (see package.json):
//
//   node scripts/proto.mjs generate   types from ../../proto into src/generated/ (gitignored)
//   node scripts/proto.mjs copy       the proto itself into dist/proto/, where the client loads it at run time
//   node scripts/proto.mjs clean      remove dist/ and src/generated/
//   node scripts/proto.mjs clean-package   remove what `npm pack` ships (dist/src, dist/esm, dist/proto)
//                                          and src/generated/, leaving the compiled tests alone
//
// The repository's proto/ folder is the single source of truth: nothing here is edited by hand, and
// both outputs are recreated from it on every build, so they cannot drift from it.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const protoDir = path.resolve(packageRoot, "..", "..", "proto");
const protoFile = "livekit_bridge.proto";
const generatedDir = path.join(packageRoot, "src", "generated");
const distDir = path.join(packageRoot, "dist");

function requireProto() {
  const file = path.join(protoDir, protoFile);
  if (!existsSync(file)) {
    console.error(`proto.mjs: ${file} is missing; this package builds from the repository's proto/ folder`);
    process.exit(1);
  }
  return file;
}

function generate() {
  requireProto();
  rmSync(generatedDir, { recursive: true, force: true });
  const require = createRequire(import.meta.url);
  const cli = require.resolve("@grpc/proto-loader/build/bin/proto-loader-gen-types.js");
  // The same loader options the client uses at run time (src/proto.ts, LOADER_OPTIONS), so the
  // generated "__Output" types describe exactly the objects the client receives.
  const args = [
    cli,
    "--grpcLib=@grpc/grpc-js",
    `--outDir=${generatedDir}`,
    "--keepCase",
    "--longs=String",
    "--enums=String",
    "--defaults",
    "--oneofs",
    "--includeComments",
    `--includeDirs=${protoDir}`,
    // --includeDirs takes a list: without "--" it would swallow the file name too.
    "--",
    protoFile,
  ];
  const result = spawnSync(process.execPath, args, { stdio: "inherit" });
  if (result.status !== 0) {
    console.error(`proto.mjs: proto-loader-gen-types failed (exit ${result.status})`);
    process.exit(1);
  }
}

function copy() {
  requireProto();
  const target = path.join(distDir, "proto");
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target, { recursive: true });
  for (const name of readdirSync(protoDir).filter((n) => n.endsWith(".proto"))) {
    cpSync(path.join(protoDir, name), path.join(target, name));
  }
}

function clean() {
  rmSync(distDir, { recursive: true, force: true });
  rmSync(generatedDir, { recursive: true, force: true });
}

function cleanPackage() {
  for (const dir of ["src", "esm", "proto"]) {
    rmSync(path.join(distDir, dir), { recursive: true, force: true });
  }
  rmSync(generatedDir, { recursive: true, force: true });
}

const steps = { generate, copy, clean, "clean-package": cleanPackage };
const step = steps[process.argv[2] ?? ""];
if (!step) {
  console.error(`usage: node scripts/proto.mjs ${Object.keys(steps).join("|")}`);
  process.exit(2);
}
step();
