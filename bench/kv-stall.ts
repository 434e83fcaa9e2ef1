/**
 * `npm run bench:kv-stall` (a diagnostic of issue 19 on CPU): the longest event-loop stall of a pod
 * while it writes a state back to the KV store and while it loads one, the pod's own code
 * (KvPrefixCache, its native listener) against a kvstore process started here (memory tier, blocks
 * over TCP), with a 7B-shaped synthetic state (32 layers, 8 KV heads x 128 channels, f16;
 * BENCH_TOKENS tokens, default 8192: 1.07 GB). On the H100 the reuse rows of bench:http saw a pod
 * stall 0.6 s during a write-back and 0.46 s during a load (`diagnostics` in gpu-reuse
 * results): every other request on the pod waits that long. A stall here is a stall there (the
 * GPU adds page-locking). Also the load by a pod whose own write-back has just begun, with the
 * write-back yielding to it (load-gate.ts) and without: on the H100 such a load took 870 ms
 * instead of ~250. Prints, per round, each phase's wall time, longest stall and stage seconds;
 * writes bench/results/kv-stall.json (BENCH_OUT elsewhere).
 */
import { writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { Registry } from "prom-client";
import { syntheticSeqState } from "../testing/kv-state.ts";
import { seqStateTokens } from "../engine/runtime/seq-state.ts";
import { KvPrefixCache } from "../engine/kvstore/prefix-cache.ts";
import { createKvClientMetrics } from "../engine/kvstore/client-metrics.ts";
import { kvStreamAddon } from "../engine/pd/kv-transport.ts";
import { useNativeCrc32c } from "../engine/kvstore/crc32c.ts";
import { startServer, type RunningServer } from "./http/servers.ts";
import { noOptions } from "./cli.ts";

noOptions();

const TOKENS = Number(process.env.BENCH_TOKENS ?? 8192);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** The load-during-write-back rows: ms before the write-back's state is there, as an export from the GPU takes (BENCH_EXPORT_MS). */
const EXPORT_MS = Number(process.env.BENCH_EXPORT_MS ?? 150);
/** The load-during-another-pod's-upload rows: ms the upload runs before the load begins (its split takes ~150-500 ms of it here). */
const UPLOAD_HEAD_START_MS = Number(process.env.BENCH_UPLOAD_HEAD_START_MS ?? 250);
const PORT = 20_000 + Math.floor(Math.random() * 20_000);

const addon = await kvStreamAddon();
if (!addon) throw new Error("the native addon is not available (LLMFLEET_NATIVE_ADDON, or scripts/native/build.sh)");
useNativeCrc32c((b) => addon.kvChecksum(b));
const url = `http://127.0.0.1:${PORT}`;

/**
 * A kvstore process (memory tier), started afresh for each round (a pod's first request on a
 * kept-alive connection failed once after the last round's). holdUploads false: the store does not
 * hold pods' uploads back while it pushes a load (LLMFLEET_KV_STORE_HOLD_UPLOADS=0, the baseline).
 */
function startStore(port = PORT, holdUploads = true): Promise<RunningServer> {
  const args = ["--import", "tsx", "engine/main.ts", "--role", "kvstore", "--tier", "name=ram,medium=memory,capacity=16Gi", "--host", "127.0.0.1", "--port", String(port)];
  const env = holdUploads ? {} : { LLMFLEET_KV_STORE_HOLD_UPLOADS: "0" };
  return startServer("kvstore", process.execPath, args, { port, readyPath: "/health", timeoutMs: 60_000, env });
}

/**
 * A pod's prefix cache with its own listener (two pods: the writer and the loader). `worker`: the
 * addon without kvGather, so a write-back's blocks are split on the codec worker as before it.
 */
function pod(worker = false, writesYieldToLoads = false, storeUrl = url): { cache: KvPrefixCache; registry: Registry } {
  const { port, handle } = addon!.kvListen("127.0.0.1", 0, { maxBytes: 8 * 2 ** 30, maxConnections: 64 });
  const podAddon = worker ? { ...addon!, kvGather: undefined } : addon!;
  const registry = new Registry();
  const cache = new KvPrefixCache({
    url: storeUrl,
    timeoutMs: 120_000,
    model: "kv-stall-bench",
    layout: { streams: 1, vTransposed: false },
    metrics: createKvClientMetrics(registry),
    tcp: { addon: podAddon, port, handle },
    writeBackBudgetBytes: 8 * 2 ** 30,
    writesYieldToLoads,
    log: (l) => process.stderr.write(`${l}\n`),
  });
  // Loading must look worth it to the estimator: a slow prefill observed.
  cache.observePrefill(TOKENS, TOKENS * 10);
  return { cache, registry };
}

/**
 * Runs `fn` with the event loop watched: wall ms, the longest stall (ms) and the ms the loop was
 * busy (its utilisation times the wall time: what other requests on the pod queue behind).
 */
async function watched<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number; stallMs: number; busyMs: number }> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const elu = performance.eventLoopUtilization();
  const t0 = performance.now();
  const value = await fn();
  const ms = performance.now() - t0;
  const busy = performance.eventLoopUtilization(elu);
  h.disable();
  return { value, ms: Math.round(ms), stallMs: Math.round(h.max / 1e5) / 10, busyMs: Math.round(busy.active) };
}

async function stages(registry: Registry): Promise<Record<string, number>> {
  const m = await registry.getSingleMetric("llmfleet_kv_store_stage_seconds_total")!.get();
  return Object.fromEntries(m.values.map((v) => [`${v.labels.op}_${v.labels.stage}`, Math.round(v.value * 1000)]));
}

let bytes = 0; // the state's size (every round's is the same)
const release = (b: Buffer): void => void addon.kvRelease?.(b);

/** Loads the prefix `tokens`; the bytes of the state it gave (0: none), the state given back to the pool. */
async function fetchedBytes(cache: KvPrefixCache, tokens: number[]): Promise<number> {
  const got = await cache.fetchPrefix(tokens);
  const n = got?.state.length ?? 0; // read before the release detaches it
  if (got) release(got.state);
  return n;
}

/**
 * A state as a pod holds one: a host-pool block (an export from the engine is one), given back
 * once written. The synthetic state is made in JavaScript first; it is collected here, before
 * the measured windows: freeing a 1 GB JavaScript buffer unmaps it on a V8 thread, which held the
 * event loop ~100-230 ms (the address-space lock) whenever a collection landed in a window — a
 * stall of this bench's making, not a pod's.
 */
function podState(seed: number, shift: number): { state: Buffer; tokens: number[]; crc: number } {
  const made = syntheticSeqState({ tokens: TOKENS, sections: [32], channels: 1024, seed });
  const tokens = seqStateTokens(made).map((t) => t + shift);
  made.set(Buffer.from(Int32Array.from(tokens).buffer), 12);
  const state = addon!.kvAlloc ? addon!.kvAlloc(made.length) : Buffer.allocUnsafe(made.length);
  made.copy(state);
  const crc = addon!.kvChecksum(state);
  return { state, tokens, crc };
}

/** Collects the synthetic states' JavaScript buffers and lets V8's threads unmap them (node --expose-gc). */
async function settleHeap(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return;
  gc();
  await new Promise((r) => setTimeout(r, 1000));
}

/**
 * Ms of the load of `tokens` (stored) by a pod whose own write-back of another state has just
 * begun: with its write-back waiting for the load (the default) or not (the baseline).
 */
async function loadDuringWriteBack(round: number, tokens: number[], yieldToLoads: boolean): Promise<number> {
  const i = 2 * round + (yieldToLoads ? 0 : 1);
  const other = podState(200 + i, 200_000 + i * 1000);
  await settleHeap();
  const self = pod(false, yieldToLoads);
  const t = await watched(async () => {
    // The state as an export gives it: after the engine's copy (142-169 ms for 1 GB on the H100).
    const exported = new Promise<Buffer>((r) => setTimeout(() => r(other.state), EXPORT_MS));
    self.cache.writeBack(other.tokens, TOKENS, exported, { release: release });
    return fetchedBytes(self.cache, tokens);
  });
  if (t.value !== bytes) {
    const outcomes = (await self.registry.metrics()).split("\n").filter((l) => l.startsWith("llmfleet_kv_store_loads_total"));
    throw new Error(`round ${round}: the load during a write-back gave ${t.value} of ${bytes} bytes (${outcomes.join(", ")})`);
  }
  await self.cache.settled();
  await self.cache[Symbol.asyncDispose]();
  return t.ms;
}

/**
 * Ms of a load by one pod alone, then during another pod's upload of another state (its blocks
 * moving), against a store of its own that holds uploads back while it pushes, or not.
 */
async function loadDuringOtherUpload(round: number, holdUploads: boolean): Promise<{ alone: number; during: number }> {
  const port = PORT + 2;
  const store = await startStore(port, holdUploads);
  const at = `http://127.0.0.1:${port}`;
  const load = async (tokens: number[]): Promise<number> => {
    const loader = pod(false, false, at);
    const t = await watched(() => fetchedBytes(loader.cache, tokens));
    await loader.cache[Symbol.asyncDispose]();
    if (t.value !== bytes) throw new Error(`round ${round}: a load gave ${t.value} of ${bytes} bytes`);
    return t.ms;
  };
  try {
    const i = 2 * round + (holdUploads ? 0 : 1);
    const entry = podState(400 + i, 400_000 + i * 1000);
    const other = podState(500 + i, 500_000 + i * 1000);
    await settleHeap();
    const writer = pod(false, false, at);
    writer.cache.writeBack(entry.tokens, TOKENS, Promise.resolve(entry.state), { release: release });
    await writer.cache.settled();
    const alone = await load(entry.tokens);
    writer.cache.writeBack(other.tokens, TOKENS, Promise.resolve(other.state), { release: release });
    await new Promise((r) => setTimeout(r, UPLOAD_HEAD_START_MS)); // its blocks cut, their upload under way
    const during = await load(entry.tokens);
    await writer.cache[Symbol.asyncDispose]();
    return { alone, during };
  } finally {
    await store.stop(10_000);
  }
}

const rounds: Record<string, unknown>[] = [];
const load = loadavg()[0]!;
for (let r = 0; r < ROUNDS; r++) {
  const store = await startStore();
  try {
    // Another state each round (its seed): nothing is deduped against the last round's.
    const { state, tokens, crc } = podState(r + 1, r * 1000);
    bytes = state.length;
    // First the same write split the old way (codec worker), another state so nothing is deduped.
    const old = podState(100 + r, 100_000 + r * 1000);
    await settleHeap();
    const oldWriter = pod(true);
    const oldWrite = await watched(async () => {
      oldWriter.cache.writeBack(old.tokens, TOKENS, Promise.resolve(old.state), { release: release });
      await oldWriter.cache.settled();
    });
    await oldWriter.cache[Symbol.asyncDispose]();
    const writer = pod();
    const write = await watched(async () => {
      writer.cache.writeBack(tokens, TOKENS, Promise.resolve(state), { release: release });
      await writer.cache.settled();
    });
    const loader = pod();
    const loaded = await watched(() => loader.cache.fetchPrefix(tokens));
    if (!loaded.value || loaded.value.state.length !== bytes || addon.kvChecksum(loaded.value.state) !== crc)
      throw new Error(
        `round ${r}: the loaded state differs from the written one (${loaded.value?.tokens} tokens, ${loaded.value?.state.length} of ${bytes} bytes)`,
      );
    addon.kvRelease?.(loaded.value.state);
    // Which goes first alternates by round (a fresh pod's first load pays for its listener's threads and pages).
    const during: Record<string, number> = {};
    for (const yieldToLoads of r % 2 === 0 ? [true, false] : [false, true])
      during[yieldToLoads ? "load_during_writeback_ms" : "load_during_writeback_ms_no_yield"] = await loadDuringWriteBack(r, tokens, yieldToLoads);
    for (const hold of r % 2 === 0 ? [true, false] : [false, true]) {
      const { alone, during: ms } = await loadDuringOtherUpload(r, hold);
      during[hold ? "load_alone_ms_hold" : "load_alone_ms_no_hold"] = alone;
      during[hold ? "load_during_other_upload_ms" : "load_during_other_upload_ms_no_hold"] = ms;
    }
    const row = {
      write_ms: write.ms,
      write_stall_ms: write.stallMs,
      write_busy_ms: write.busyMs,
      write_ms_worker_split: oldWrite.ms,
      write_stall_ms_worker_split: oldWrite.stallMs,
      write_busy_ms_worker_split: oldWrite.busyMs,
      load_ms: loaded.ms,
      load_stall_ms: loaded.stallMs,
      load_busy_ms: loaded.busyMs,
      ...during,
      stages_ms: { ...(await stages(writer.registry)), ...(await stages(loader.registry)) },
    };
    process.stderr.write(`bench:kv-stall: round ${r}: ${JSON.stringify(row)}\n`);
    rounds.push(row);
    await writer.cache[Symbol.asyncDispose]();
    await loader.cache[Symbol.asyncDispose]();
  } finally {
    await store.stop(10_000);
  }
}
const median = (k: string): number => [...rounds.map((x) => x[k] as number)].sort((a, b) => a - b)[Math.floor(rounds.length / 2)]!;
const result = {
  date: new Date().toISOString(),
  machine: `${cpus()[0]?.model ?? "?"} x${cpus().length}; load average ${load.toFixed(2)} at the start, ${loadavg()[0]!.toFixed(2)} at the end`,
  tokens: TOKENS,
  state_bytes: bytes,
  rounds,
  write_ms: median("write_ms"),
  write_stall_ms: median("write_stall_ms"),
  write_busy_ms: median("write_busy_ms"),
  write_ms_worker_split: median("write_ms_worker_split"),
  write_stall_ms_worker_split: median("write_stall_ms_worker_split"),
  write_busy_ms_worker_split: median("write_busy_ms_worker_split"),
  load_ms: median("load_ms"),
  load_stall_ms: median("load_stall_ms"),
  load_during_writeback_ms: median("load_during_writeback_ms"),
  load_during_writeback_ms_no_yield: median("load_during_writeback_ms_no_yield"),
  // The load with the pod's own write-back under way, without its yield over with it (> 1: the yield saves that much).
  load_during_writeback_ratio: Math.round((median("load_during_writeback_ms_no_yield") / median("load_during_writeback_ms")) * 100) / 100,
  load_during_other_upload_ms: median("load_during_other_upload_ms"),
  load_during_other_upload_ms_no_hold: median("load_during_other_upload_ms_no_hold"),
  // A load during another pod's upload, the store not holding uploads back over holding them (> 1: the hold saves that much).
  load_during_other_upload_ratio: Math.round((median("load_during_other_upload_ms_no_hold") / median("load_during_other_upload_ms")) * 100) / 100,
};
const out = process.env.BENCH_OUT ?? "bench/results/kv-stall.json";
await writeFile(out, `${JSON.stringify(result, null, 2)}\n`);
process.stderr.write(
  `bench:kv-stall: write ${result.write_ms} ms (longest stall ${result.write_stall_ms} ms, event loop busy ${result.write_busy_ms} ms; split on the codec worker instead: ${result.write_ms_worker_split} ms, ${result.write_stall_ms_worker_split} ms, ${result.write_busy_ms_worker_split} ms), load ${result.load_ms} ms (longest stall ${result.load_stall_ms} ms); the load with the pod's own write-back under way ${result.load_during_writeback_ms} ms, ${result.load_during_writeback_ms_no_yield} ms without the write-back's yield (${result.load_during_writeback_ratio}x); during another pod's upload ${result.load_during_other_upload_ms} ms, ${result.load_during_other_upload_ms_no_hold} ms with the store not holding uploads back (${result.load_during_other_upload_ratio}x) -> ${out}\n`,
);
