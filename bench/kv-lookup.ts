/**
 * `npm run bench:kv-lookup [-- --repeats N] [--s3-server seaweedfs|moto] [--out FILE]`: what a
 * pod's lookup (POST /v1/kv/lookup, the first thing a pod with --kv-store asks about a prompt)
 * costs on a store whose tier is an object store, by the store's round trip to it. A kvstore pod
 * as its own process (engine/main.ts --role kvstore), its one tier an S3 server (SeaweedFS by
 * default) behind a proxy on loopback that delays every chunk each way (testing/shaped-proxy.ts):
 * round trips of 0, 2, 10 and 20 ms (an object store in the same region answers a HEAD in ~10-20
 * ms). The prompt is 8K tokens in 256-token blocks: 32 keys. Per round trip, median of --repeats:
 *
 *   miss_ms      none of the 32 keys is stored (a new prompt)
 *   half_ms      the first 16 blocks are stored (a cached 4K context, then 4K of new text)
 *   whole_ms     all 32 are (the context learned once, asked whole)
 *   info_ms      POST /v1/kv/blocks/info of the 32 held keys (what a pod asks before it writes an
 *                entry that extends a stored one: each held block's size and CRC-32C; the store
 *                has not seen these written as blocks, so it reads each back to sum it)
 *
 * Baseline: the same store asking its tier one key at a time, longest first
 * (LLMFLEET_KV_LOOKUP_WINDOW=1, how every lookup and blocks/info ran before), against the default
 * (the longest key alone, then eight at a time: engine/kvstore/tiered-store.ts longest; blocks/info
 * eight at a time: blockSumsOf). Writes
 * bench/results/kv-lookup.json (or --out) with `lookup_miss_ratio_rtt10` (one at a time / default)
 * and the rest per round trip.
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg } from "node:os";
import { benchArgs } from "./cli.ts";
import { s3ServerKind, startS3ServerOf } from "../scripts/s3/servers.ts";
import { encodeKvEntry } from "../engine/kvstore/kv-entry.ts";
import { startShapedProxyProcess } from "../testing/shaped-proxy-process.ts";
import { startStoreProcess } from "./kv-link-procs.ts";

const { values: v } = benchArgs({ options: { repeats: { type: "string" }, "s3-server": { type: "string" }, out: { type: "string" } } });
const REPEATS = Number(v.repeats ?? 9);
const S3_SERVER = s3ServerKind(v["s3-server"] ?? "seaweedfs");
const OUT = v.out ?? new URL("./results/kv-lookup.json", import.meta.url);
const KEYS = 32;
const RTTS_MS = [0, 2, 10, 20];
const CASES = { miss: 0, half: 16, whole: 32 } as const;
const MODES = { one_at_a_time: "1", default: "" } as const;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const hexKey = (): string => randomBytes(32).toString("hex");

/** Milliseconds of one lookup; checks the answer is the longest stored key. */
async function lookupMs(url: string, keys: string[], stored: number): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/kv/lookup`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ keys }) });
  const found = (await res.json()) as { index: number };
  const ms = performance.now() - t0;
  if (!res.ok || found.index !== stored - 1) throw new Error(`lookup answered ${res.status} index ${found.index}, expected ${stored - 1}`);
  return ms;
}

/** 32 keys of which the first `stored` are held by the store (each a small valid entry, written through its API). */
async function promptKeys(url: string, stored: number): Promise<string[]> {
  const keys = Array.from({ length: KEYS }, hexKey);
  for (const k of keys.slice(0, stored)) {
    const entry = encodeKvEntry({ model: "bench", tokens: 256, codec: "none", stateBytes: 64 }, Buffer.alloc(64, 1));
    const res = await fetch(`${url}/v1/kv/${k}`, { method: "PUT", body: new Uint8Array(entry) });
    if (res.status !== 201) throw new Error(`storing a key: HTTP ${res.status} ${await res.text()}`);
  }
  return keys;
}

type Row = Record<string, number>;

/** Milliseconds of POST /v1/kv/blocks/info for held keys; checks every one is answered. */
async function infoMs(url: string, keys: string[]): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/kv/blocks/info`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ keys }) });
  const { blocks } = (await res.json()) as { blocks: (object | null)[] };
  const ms = performance.now() - t0;
  if (!res.ok || blocks.length !== keys.length || blocks.some((b) => b === null)) throw new Error(`blocks/info answered ${res.status}: ${JSON.stringify(blocks).slice(0, 200)}`);
  return ms;
}

/** Median ms of `fn` over REPEATS, after a first one (connections to the S3 server). */
async function medianOf(fn: () => Promise<number>): Promise<number> {
  await fn();
  const ms: number[] = [];
  for (let r = 0; r < REPEATS; r++) ms.push(await fn());
  return median(ms);
}

/** Each case's median ms at the proxy's present delay. */
async function measureRow(url: string, keys: Record<string, string[]>): Promise<Row> {
  const row: Row = {};
  for (const [c, n] of Object.entries(CASES)) row[`${c}_ms`] = await medianOf(() => lookupMs(url, keys[c]!, n));
  row.info_ms = await medianOf(() => infoMs(url, keys.whole!));
  return row;
}

async function main(): Promise<void> {
  await using s3 = await startS3ServerOf(S3_SERVER);
  const port = Number(new URL(s3.endpoint).port);
  await using proxy = await startShapedProxyProcess("127.0.0.1", port, Infinity);
  const rows: Record<string, Record<string, Row>> = {};
  for (const [mode, window] of Object.entries(MODES)) {
    const tier = `name=s3,medium=objectStore,endpoint=http://127.0.0.1:${proxy.port},bucket=llmfleet-kv-lookup-${mode.replace(/_/g, "-")}`;
    await using store = await startStoreProcess("none", [tier], { ...s3.env, LLMFLEET_KV_LOOKUP_WINDOW: window });
    await proxy.setDelay(0);
    const keys = Object.fromEntries(await Promise.all(Object.entries(CASES).map(async ([c, n]) => [c, await promptKeys(store.url, n)] as const)));
    for (const rtt of RTTS_MS) {
      await proxy.setDelay(rtt / 2);
      const row = await measureRow(store.url, keys);
      (rows[`rtt_${rtt}ms`] ??= {})[mode] = row;
      console.log(`kv-lookup: ${JSON.stringify({ mode, rttMs: rtt, ...row })}`);
    }
  }
  const ratios: Record<string, number> = {};
  for (const rtt of RTTS_MS) {
    const r = rows[`rtt_${rtt}ms`]!;
    for (const c of Object.keys(CASES)) ratios[`lookup_${c}_ratio_rtt${rtt}`] = r.one_at_a_time![`${c}_ms`]! / r.default![`${c}_ms`]!;
    ratios[`info_ratio_rtt${rtt}`] = r.one_at_a_time!.info_ms! / r.default!.info_ms!;
  }
  const out = {
    bench: "kv-lookup",
    date: new Date().toISOString(),
    machine: { cpus: availableParallelism(), model: cpus()[0]?.model, loadavg: loadavg() },
    s3Server: S3_SERVER,
    keys: KEYS,
    repeats: REPEATS,
    ratioOf: "one key at a time (LLMFLEET_KV_LOOKUP_WINDOW=1, the baseline) / the default (a lookup: the longest alone, then 8 at a time; blocks/info: 8 at a time), median ms",
    ...ratios,
    rows,
  };
  await writeFile(OUT, `${JSON.stringify(out, null, 2)}\n`);
  console.log(`kv-lookup: a miss of ${KEYS} keys at a 10 ms round trip: ${ratios.lookup_miss_ratio_rtt10!.toFixed(2)}x faster than one key at a time`);
}

await main();
