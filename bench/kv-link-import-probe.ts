/**
 * `tsx bench/kv-link-import-probe.ts`: is the work after a load (state import, prefill of the
 * question) slower for a compact-decoded state than for the raw one? bench:kv-link's first,
 * sequential runs (on a busy machine) found compact's memory-tier TTFT ~80 ms above none's beyond
 * the load itself; its interleaved runs did not. In-process, one pod, 8,192 tokens
 * of Gemma 3 270M: the raw state, a compact-decoded copy, and one decoded just before its import
 * (as a load does), medians of 5. Answer on 2026-12-06 (load average 3): the same, ~6-15 ms
 * import and ~130-210 ms prefill for each, so the gap is not the model's work.
 */
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { runCodec } from "../engine/kvcodec/codec-offload.ts";
import { startPod } from "../testing/engine.ts";

const model = await ensureDefaultModel();
await using pod = await startPod({ model, threads: 2, ctxSize: 8704, parallel: 1 });
const rt = pod.pod.service.runtime;
const FILLER = "The lighthouse stood on the rocks above the harbour, and every night its keeper climbed the stairs to light the lamp. Ships passed in the dark, sailors counted the flashes, and the town slept below. ";
let text = "Document 8192.\n";
for (let i = 0; rt.tokenize(text).length < 8300; i++) text += `${i}. ${FILLER}`;
const tokens = rt.tokenize(text).slice(0, 8260);
const seq = rt.sequences[0]!;
await seq.clear();
await seq.evaluatePrefix(tokens.slice(0, 8192));
const raw = await seq.exportState();
const enc = await runCodec("encode", "compact", raw);
const dec = await runCodec("decode", "compact", enc);
console.log("raw", raw.length, "enc", enc.length, "dec", dec.length);
const rows: Record<string, { importMs: number; prefillMs: number }[]> = { none: [], compact: [], "compact-fresh": [] };
for (let r = 0; r < 5; r++) {
  for (const name of ["none", "compact", "compact-fresh"] as const) {
    await seq.clear();
    const st = name === "none" ? Buffer.from(raw) : name === "compact" ? Buffer.from(dec) : await runCodec("decode", "compact", enc);
    const t0 = performance.now();
    await seq.importState(st);
    const t1 = performance.now();
    const hits = await seq.evaluatePrefix(tokens);
    const t2 = performance.now();
    if (hits !== 8192) throw new Error(`hits ${hits}`);
    rows[name]!.push({ importMs: t1 - t0, prefillMs: t2 - t1 });
  }
}
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[2]!;
for (const [n, xs] of Object.entries(rows)) console.log(n, "import", med(xs.map((x) => x.importMs)).toFixed(1), "prefill68", med(xs.map((x) => x.prefillMs)).toFixed(1), JSON.stringify(xs.map((x) => [Math.round(x.importMs), Math.round(x.prefillMs)])));
