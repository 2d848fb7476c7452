// ESLint (flat config) for the client, its tests and build scripts: `npm run lint`, which
// `nox -s client_ts` runs before the tests. TypeScript files get typescript-eslint's type-aware
// recommended rules, type-checked against tsconfig.json (so src/generated/ must exist: the lint
// script generates it first); the .mjs build scripts get the plain recommended rules.
import eslint from "@eslint/js";
import { defineConfig } from "eslint/config";
import globals from "globals";
import tseslint from "typescript-eslint";

export default defineConfig(
  {
    ignores: [
      "dist/",
      "node_modules/",
      // Generated from ../../proto by scripts/proto.mjs.
      "src/generated/",
      // Compiled against the packed package by test/package/pack.test.ts, outside tsconfig.json.
      "test/compat/",
    ],
  },
  {
    files: ["**/*.ts"],
    extends: [eslint.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // node:test's describe/test return promises that its runner awaits itself.
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          allowForKnownSafeCalls: [
            { from: "package", package: "node:test", name: ["describe", "it", "test", "suite"] },
          ],
        },
      ],
    },
  },
  {
    files: ["**/*.mjs"],
    extends: [eslint.configs.recommended],
    languageOptions: { globals: globals.node },
  },
);
