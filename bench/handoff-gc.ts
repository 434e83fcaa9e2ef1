/**
 * `tsx bench/handoff-gc.ts` (a diagnostic, not a claim of speed): what a received hand-off costs
 * the decode pod's JavaScript thread beside the bytes. Every taken state is a Buffer over a pool
 * block of the state's size, and V8 counts each new ArrayBuffer's length as external memory: one
 * of 128 MB (a 1K-token state of a 7B f16 model) passes its external-memory limit and starts a
 * full mark-compact, whose cost grows with the live heap. This sends BENCH_STATES states of
 * BENCH_STATE_MB MiB to a listener in this process, takes and releases each (as the decode pod
 * does), with a live heap of BENCH_HEAP_OBJECTS small objects, and counts the mark-compacts and
 * their time (perf_hooks 'gc' entries) and the kvTake calls' time. Writes
 * bench/results/handoff-gc.json (BENCH_OUT elsewhere).
 */
import { writeFile } from "node:fs/promises";
import { constants, PerformanceObserver } from "node:perf_hooks";
import { cpus } from "node:os";
import { kvStreamAddon, TCP_CHUNK_BYTES } from "../engine/pd/kv-transport.ts";

const STATE_MB = Number(process.env.BENCH_STATE_MB ?? 128);
const STATES = Number(process.env.BENCH_STATES ?? 12);
const HEAP_OBJECTS = Number(process.env.BENCH_HEAP_OBJECTS ?? 1_500_000);

const kv = await kvStreamAddon();
if (!kv?.kvRelease) throw new Error("the native addon (kv-stream with kvRelease) is not available");
const marks: number[] = [];
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries())
    if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) marks.push(e.duration);
});
const live: object[] = [];
for (let i = 0; i < HEAP_OBJECTS; i++) live.push({ a: i, b: `s${i}`, c: [i] });
const l = kv.kvListen("127.0.0.1", 0, { maxBytes: 3 * STATE_MB * 2 ** 20 });
const state = Buffer.alloc(STATE_MB * 2 ** 20, 1);
const takes: number[] = [];
try {
  obs.observe({ entryTypes: ["gc"] });
  for (let r = 0; r < STATES; r++) {
    await kv.kvSend(state, "127.0.0.1", l.port, `gc-${r}`, "{}", TCP_CHUNK_BYTES, 60_000, 1);
    const t0 = performance.now();
    const taken = kv.kvTake(l.handle, `gc-${r}`);
    takes.push(performance.now() - t0);
    if (!taken) throw new Error(`gc-${r} was not staged`);
    kv.kvRelease(taken.state);
  }
  await new Promise((r) => setTimeout(r, 100)); // the last gc entries
} finally {
  obs.disconnect();
  kv.kvClose(l.handle);
}
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
const out = {
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model },
  stateBytes: state.length,
  states: STATES,
  liveHeapMB: Math.round(process.memoryUsage().heapUsed / 1e6),
  heapObjects: live.length,
  majorGcs: marks.length,
  majorGcMsTotal: Math.round(sum(marks)),
  kvTakeMs: takes.map((x) => Math.round(x * 100) / 100),
  kvTakeMsMean: Math.round((sum(takes) / takes.length) * 100) / 100,
};
console.log(
  `handoff-gc: ${STATES} states of ${STATE_MB} MiB with ${out.liveHeapMB} MB of live heap: ${out.majorGcs} mark-compacts (${out.majorGcMsTotal} ms), kvTake ${out.kvTakeMsMean} ms mean`,
);
await writeFile(process.env.BENCH_OUT ?? new URL("./results/handoff-gc.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
