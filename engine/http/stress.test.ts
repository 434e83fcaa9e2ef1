/**
 * The engine over HTTP under traffic that joins, leaves and cancels (bench/http/stress.ts), with
 * pipelined decoding on: every request ends with a whole answer, a deliberate hang-up or the 400
 * its size calls for; the process keeps serving; no KV cell is left that no sequence accounts for.
 * On CPU a decode is synchronous, so this cannot show a device fault (the GPU run of
 * `npm run bench:http -- --section stress` is that gate); it does show the speculation's
 * bookkeeping: speculated steps taken and rolled back as requests come and go.
 * Real llama.cpp on a tiny synthetic GGUF.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { LoadClient } from "../../bench/http/load-client.ts";
import { runStress } from "../../bench/http/stress.ts";
import { NativeRuntime } from "../runtime/native-runtime.ts";
import { metricValue, startPod, type RunningPod } from "../../testing/engine.ts";

const CTX = 192;
let pod: RunningPod;

before(async () => {
  pod = await startPod({ model: "synthetic://tiny", backend: "native", pipelineDecode: "on", parallel: 4, ctxSize: CTX, maxQueue: 256, threads: 1 });
});
after(async () => {
  await pod[Symbol.asyncDispose]();
});

test("stress over HTTP with pipelining on: every request ends as planned, the KV holds no stray cells", async () => {
  const runtime = pod.pod.service.runtime as NativeRuntime;
  assert.equal(runtime.engine.info().pipeline, true);
  const client = new LoadClient(pod.url, 64);
  try {
    const report = await runStress(client, { clients: 10, seconds: 12, ctxSize: CTX, maxGen: 200, seed: 7, maxGapMs: 30 });
    assert.deepEqual(report.failures, []);
    assert.ok(report.complete > 20, `only ${report.complete} complete answers`);
    assert.ok(report.disconnected > 0 && report.refusedTooLong > 0, JSON.stringify(report));
  } finally {
    client.close();
  }
  const health = await fetch(`${pod.url}/health`);
  assert.equal(health.status, 200);
  const info = runtime.engine.info();
  assert.ok(info.speculatedUsed > 0 && info.speculatedDropped > 0, `speculation used ${info.speculatedUsed}, dropped ${info.speculatedDropped}`);
  assert.equal(await metricValue(pod.url, "llmfleet_kv_stray_tokens"), 0);
  assert.equal(pod.pod.service.pool.running, 0);
});

test("llmfleet_kv_stray_tokens shows cells no sequence accounts for", async () => {
  const runtime = pod.pod.service.runtime as NativeRuntime;
  const seq = runtime.sequences[0]!;
  const at = seq.contextTokens().length;
  await runtime.scheduler.evaluate({ seq: seq.id, pos: at, tokens: [runtime.tokenize("a")[1]!], sample: false });
  assert.equal(await metricValue(pod.url, "llmfleet_kv_stray_tokens"), 1);
  await runtime.scheduler.exclusive(() => runtime.engine.seqRm(seq.id, at, -1));
  assert.equal(await metricValue(pod.url, "llmfleet_kv_stray_tokens"), 0);
});
