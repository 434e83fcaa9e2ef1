// The qsink8 codec's query gains are generated from the default model's GGUF
// (scripts/kvcodec/query-gains.ts): the committed table must be exactly what the derivation gives.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ensureDefaultModel } from "../model/fetch.ts";
import { deriveQueryGains } from "../../scripts/kvcodec/query-gains.ts";
import { GEMMA3_270M_QUERY_GAINS } from "./query-gains.ts";

test("the committed query-gains table is what scripts/kvcodec/query-gains.ts derives from the model", async () => {
  const derived = await deriveQueryGains(await ensureDefaultModel());
  assert.deepEqual(Object.keys(derived), ["3", "15"]);
  assert.deepEqual(derived, GEMMA3_270M_QUERY_GAINS, "run `npm run kvcodec:query-gains` after changing the derivation");
});
