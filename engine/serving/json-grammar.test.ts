/**
 * Standalone: JSON schemas into GBNF. Every grammar the converter writes is parsed by llama.cpp's
 * grammar parser (the native addon's setExtras refuses one that does not parse; tiny synthetic
 * GGUF); keywords the grammar cannot enforce are refused with their path.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { ensureModel } from "../model/fetch.ts";
import { loadNativeAddon, type NativeEngine } from "../native/binding.ts";
import { JSON_OBJECT_GRAMMAR, jsonSchemaGrammar, SchemaError } from "./json-grammar.ts";
import { toolCallGrammar } from "./tool-calls.ts";

let engine: NativeEngine;

before(async () => {
  engine = await (await loadNativeAddon()).load(await ensureModel("synthetic://tiny"), { contextSize: 256, sequences: 1, threads: 1 });
});
after(async () => {
  await engine.dispose();
});

function assertParses(grammar: string): void {
  engine.setSampler(0, 0, 0, 1);
  assert.doesNotThrow(() => engine.setExtras(0, 0, 0, new Int32Array(0), new Float32Array(0), grammar, -1), grammar);
  engine.setSampler(0, 0, 0, 1);
}

const SCHEMAS: Record<string, Record<string, unknown>> = {
  empty: {},
  primitives: { type: "object", properties: { s: { type: "string" }, n: { type: "number" }, i: { type: "integer" }, b: { type: "boolean" }, z: { type: "null" } } },
  nullable: { type: "object", properties: { a: { type: ["string", "null"] } }, required: ["a"] },
  optionalOnly: { type: "object", properties: { a: { type: "string" }, b: { type: "integer" }, c: { const: "x" } } },
  mixed: { type: "object", properties: { a: { type: "string" }, b: { type: "integer" }, c: { enum: [1, "two", null] } }, required: ["b"] },
  arrays: { type: "array", items: { type: "array", items: { type: "integer" }, minItems: 1, maxItems: 3 }, maxItems: 0 },
  bounded: { type: "object", properties: { s: { type: "string", minLength: 2, maxLength: 5 }, l: { type: "array", items: { type: "boolean" }, minItems: 2 } } },
  unions: { anyOf: [{ type: "string" }, { type: "object", properties: { k: { oneOf: [{ type: "integer" }, { type: "boolean" }] } } }] },
  recursive: {
    $defs: { node: { type: "object", properties: { value: { type: "integer" }, children: { type: "array", items: { $ref: "#/$defs/node" } } }, required: ["value"] } },
    $ref: "#/$defs/node",
  },
  annotated: { title: "T", description: "d", type: "object", properties: { a: { type: "string", description: "quote \" and \\ and\nnewline", default: "x" } } },
  quotedKeys: { type: "object", properties: { 'we"ird\\key': { type: "string" }, "ünï": { const: "ü \" \n" } }, required: ['we"ird\\key'] },
};

test("every schema shape becomes a grammar llama.cpp parses", () => {
  assertParses(JSON_OBJECT_GRAMMAR);
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    const grammar = jsonSchemaGrammar(schema);
    assert.match(grammar, /^root ::= /, name);
    assertParses(grammar);
  }
});

test("tool-call grammars (several tools, each with its own $defs) parse", () => {
  const tools = [
    { name: "a", parameters: SCHEMAS.recursive },
    { name: "b", parameters: { type: "object", $defs: { node: { type: "string" } }, properties: { x: { $ref: "#/$defs/node" } } } },
    { name: "c" },
  ];
  assertParses(toolCallGrammar(tools, "required"));
  assertParses(toolCallGrammar(tools, { name: "b" }));
});

test("constraints the grammar cannot enforce are refused with their path, never dropped", () => {
  const rows: [Record<string, unknown>, string][] = [
    [{ type: "string", pattern: "^a" }, "schema.pattern"],
    [{ type: "string", format: "date-time" }, "schema.format"],
    [{ type: "object", properties: { n: { type: "integer", minimum: 0 } } }, "schema.properties.n.minimum"],
    [{ type: "object", properties: { a: { type: "string" } }, required: ["b"] }, "schema.required"],
    [{ type: "array", items: { type: "string" }, minItems: 3, maxItems: 2 }, "schema.maxItems"],
    [{ type: "strange" }, "schema.type"],
    [{ $ref: "#/$defs/missing" }, "schema.$ref"],
    [{ anyOf: [] }, "schema"],
    [{ type: "object", not: { type: "string" } }, "schema.not"],
  ];
  for (const [schema, path] of rows) {
    assert.throws(
      () => jsonSchemaGrammar(schema),
      (err: unknown) => err instanceof SchemaError && err.path === path,
      JSON.stringify(schema),
    );
  }
});
