// Lint budget after Pepr / kubernetes-fluent-client: small functions, shallow nesting,
// few parameters, explicit return types, and no promise left floating.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/**", "dist/**", "bench/results/**", ".device/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts"],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      complexity: ["error", 10],
      "max-depth": ["error", 3],
      "max-params": ["error", 4],
      "max-lines": ["error", { max: 400, skipBlankLines: true, skipComments: true }],
      "@typescript-eslint/explicit-function-return-type": ["error", { allowExpressions: true }],
      "@typescript-eslint/no-floating-promises": [
        "error",
        { allowForKnownSafeCalls: [{ from: "package", package: "node:test", name: ["test", "it", "describe", "suite", "before", "after", "beforeEach", "afterEach"] }] },
      ],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
    },
  },
  {
    // Schema builders return TypeBox types whose inferred shape *is* the API type; spelling it
    // out again would duplicate the schema.
    files: ["crds/schema/**/*.ts"],
    rules: { "@typescript-eslint/explicit-function-return-type": "off" },
  },
  {
    // e2e/ keeps the e2e-only infrastructure (API server restarts, the pod runner, operator pods,
    // Prometheus); everything else shares helpers through testing/ and never reaches into e2e/.
    files: ["testing/**/*.ts", "operator/**/*.ts", "engine/**/*.ts", "crds/**/*.ts", "lib/**/*.ts", "scripts/**/*.ts", "bench/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ regex: "(^|/)e2e/", message: "only e2e/ imports e2e/: shared test helpers live in testing/" }] }],
    },
  },
  {
    // Boundaries (STYLE.md habit 13): the product never imports scripts/, e2e/ or test helpers
    // (testing/, the one testing library); scripts and tests import the product, not the reverse.
    files: ["operator/**/*.ts", "engine/**/*.ts", "crds/**/*.ts", "lib/**/*.ts"],
    ignores: ["**/*.test.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ regex: "(^|/)(scripts|e2e|bench)/|(^|/)(test|testing)/|\\.test\\.ts$", message: "product code must not import scripts/, e2e/, bench/ or test helpers" }] }],
    },
  },
  {
    // The engine shares with the operator only the Kubernetes library (lib/) and crds/.
    files: ["engine/**/*.ts"],
    ignores: ["**/*.test.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            { regex: "(^|/)(scripts|e2e|bench)/|(^|/)(test|testing)/|\\.test\\.ts$", message: "product code must not import scripts/, e2e/, bench/ or test helpers" },
            { regex: "(^|/)operator/", message: "the engine imports nothing from operator/: shared Kubernetes code lives in lib/" },
          ],
        },
      ],
    },
  },
  {
    // Assertions on optional fields (a?.b?.c) count as branches; tests are judged by what they assert.
    files: ["**/*.test.ts"],
    rules: { complexity: "off" },
  },
);
