/**
 * Loading the bridge's proto at run time, and the enum tables read from it.
 *
 * The proto is the repository's `proto/livekit_bridge.proto`, copied into `dist/proto/` by the build
 * (scripts/proto.mjs); the TypeScript types in `./generated` are generated from the same file by the
 * same build, with the same loader options, so types and wire objects cannot disagree.
 */
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType } from "./generated/livekit_bridge";

export const PROTO_FILE = "livekit_bridge.proto";
export const PACKAGE = "mentra.livekit.bridge";
export const SERVICE_NAME = `${PACKAGE}.LiveKitBridge`;

/**
 * The options the existing clouds load the proto with (WIRE-CONTRACT.md): enums arrive as names,
 * int64 as decimal strings, absent scalars as their defaults. scripts/proto.mjs generates the types
 * with the same options.
 */
export const LOADER_OPTIONS: protoLoader.Options = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

/** Where the build puts the proto: dist/proto/, next to dist/src/ where this file is compiled to. */
export function defaultProtoPath(): string {
  return path.resolve(__dirname, "..", "proto", PROTO_FILE);
}

/**
 * Maps an enum value as any loader configuration delivers it (a name with `enums: String`, a number
 * with the default, a numeric string from JSON) to its name; `undefined` for a value the proto does
 * not define. The old client mapped every event to FAILED because it expected numbers and got names:
 * accepting both, from a table read from the proto itself, makes that impossible.
 */
export class EnumNames<Name extends string> {
  private readonly byNumber = new Map<number, Name>();
  private readonly byName = new Map<string, Name>();

  constructor(values: ReadonlyArray<{ name: Name; number: number }>) {
    for (const { name, number } of values) {
      this.byNumber.set(number, name);
      this.byName.set(name, name);
    }
  }

  nameOf(value: unknown): Name | undefined {
    if (typeof value === "string") {
      return this.byName.get(value) ?? (/^\d+$/.test(value) ? this.byNumber.get(Number(value)) : undefined);
    }
    if (typeof value === "number") {
      return this.byNumber.get(value);
    }
    return undefined;
  }

  get size(): number {
    return this.byNumber.size;
  }
}

export interface BridgeProto {
  readonly definition: protoLoader.PackageDefinition;
  readonly grpc: ProtoGrpcType;
  readonly path: string;
}

const cache = new Map<string, BridgeProto>();

/** Loads (once per path) the proto with {@link LOADER_OPTIONS}. */
export function loadBridgeProto(protoPath: string = defaultProtoPath()): BridgeProto {
  const resolved = path.resolve(protoPath);
  let loaded = cache.get(resolved);
  if (loaded === undefined) {
    const definition = protoLoader.loadSync(resolved, LOADER_OPTIONS);
    loaded = {
      definition,
      // The cast is the one place the loader's untyped output meets the types generated from the
      // same file (the documented way to use proto-loader-gen-types).
      grpc: grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType,
      path: resolved,
    };
    cache.set(resolved, loaded);
  }
  return loaded;
}

interface EnumValueDescriptor {
  name: string;
  number: number;
}

function isEnumValue(value: unknown): value is EnumValueDescriptor {
  if (typeof value !== "object" || value === null) {
    return false;
  }
  const candidate = value as Partial<Record<keyof EnumValueDescriptor, unknown>>;
  return typeof candidate.name === "string" && typeof candidate.number === "number";
}

/**
 * The values of enum `enumName` nested in message `messageName`, read from the loaded descriptor.
 * Throws when the proto does not define it: a renamed enum must fail loudly at start-up.
 */
export function nestedEnumValues(
  definition: protoLoader.PackageDefinition,
  messageName: string,
  enumName: string,
): EnumValueDescriptor[] {
  const message = definition[`${PACKAGE}.${messageName}`];
  const descriptor: unknown = message !== undefined && "type" in message ? message.type : undefined;
  const enums: unknown =
    typeof descriptor === "object" && descriptor !== null && "enumType" in descriptor
      ? descriptor.enumType
      : undefined;
  if (Array.isArray(enums)) {
    for (const candidate of enums as unknown[]) {
      if (
        typeof candidate === "object" &&
        candidate !== null &&
        "name" in candidate &&
        candidate.name === enumName &&
        "value" in candidate &&
        Array.isArray(candidate.value)
      ) {
        return (candidate.value as unknown[]).filter(isEnumValue);
      }
    }
  }
  throw new Error(`${PACKAGE}.${messageName}.${enumName} is not defined by the loaded proto`);
}

/**
 * The table of enum `enumName` nested in `messageName`, read from the loaded proto and checked
 * against `generated`, the constant proto-loader-gen-types emitted for it: a name the generated types
 * do not know means they are stale (run `npm run build`), and is refused here, at start-up.
 */
export function checkedEnumNames<Name extends string>(
  definition: protoLoader.PackageDefinition,
  messageName: string,
  enumName: string,
  generated: Readonly<Record<string, Name>>,
): EnumNames<Name> {
  const known = new Set<string>(Object.values(generated));
  const isKnown = (name: string): name is Name => known.has(name);
  const values = nestedEnumValues(definition, messageName, enumName).map(({ name, number }) => {
    if (!isKnown(name)) {
      throw new Error(`${messageName}.${enumName}.${name} is missing from the generated types: run npm run build`);
    }
    return { name, number };
  });
  return new EnumNames(values);
}
