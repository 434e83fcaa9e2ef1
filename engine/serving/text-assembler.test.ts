import { test } from "node:test";
import assert from "node:assert/strict";
import { TextAssembler } from "./text-assembler.ts";

test("stop strings are cut and never emitted, even split across tokens", () => {
  const a = new TextAssembler(["END"]);
  assert.deepEqual(a.push("hello E"), { delta: "hello ", stopped: false });
  assert.deepEqual(a.push("hello EN"), { delta: "", stopped: false });
  assert.deepEqual(a.push("hello END more"), { delta: "", stopped: true });
  assert.equal(a.text("hello END more"), "hello ");
});

test("half a UTF-8 character is held back", () => {
  const a = new TextAssembler([]);
  assert.equal(a.push("caf\uFFFD").delta, "caf");
  assert.equal(a.push("café").delta, "é");
  assert.equal(a.finish("café"), "");
});
