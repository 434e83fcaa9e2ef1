/**
 * `npm run bench:kv-transfer`: the hand-off mechanisms alone, GB/s, into a real decode pod process
 * (`npm run engine -- --role decode`, its own receive paths), from this process with the prefill
 * pod's own send code: the native TCP stream (kvSend, what --kv-transport tcp runs) against the
 * LFKV stream over HTTP (encodeKvHandoff + PUT /internal/kv/:id, the earlier path, and the
 * fallback). The states are well-formed llama.cpp sequence states of STATE_MB MiB in the decode
 * pod's own layout (so neither path rewrites them), staged by the decode pod and never imported.
 * Each mechanism sends ROUNDS states one after another; the figure is bytes over the seconds from
 * the start of the send to the decode pod's "staged". TCP runs once per stream count in
 * BENCH_STREAMS (default 1,4,8: the v1 wire's one connection is the baseline of the striped LFKN v2
 * ones; the engine's default is --kv-streams 4). Writes bench/results/kv-transfer.json (BENCH_OUT
 * elsewhere).
 *
 * On the GPU machine (no npm there): the bundle of this file (scripts/native/device-pack.sh) with
 * BENCH_ENGINE=<bundled engine.mjs> starts the decode pod from the bundle, with the CUDA addon, so
 * its staging memory is page-locked as in a GPU pod.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { Readable } from "node:stream";
import { eventually } from "../testing/eventually.ts";
import { encodeKvHandoff } from "../engine/pd/kv-wire.ts";
import { kvStreamAddon, TCP_CHUNK_BYTES, TCP_STREAMS_DEFAULT, type KvStreamAddon } from "../engine/pd/kv-transport.ts";
import { noOptions } from "./cli.ts";

noOptions();

const STATE_MB = Number(process.env.BENCH_STATE_MB ?? 256);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);
const STREAMS = (process.env.BENCH_STREAMS ?? "1,4,8").split(",").map(Number);
const HTTP_PORT = 18_400;
const KV_PORT = 18_401;

/** A ggsq state of `tokens` cells, one stream, f16 K and V rows of `rowBytes`, `layers` layers, V not transposed. */
function syntheticState(tokens: number, layers: number, rowBytes: number): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b;
  };
  parts.push(u32(0x67677371), u32(3), u32(tokens), Buffer.alloc(4 * tokens)); // header; tokens all 0
  parts.push(u32(1), u32(tokens)); // one stream of `tokens` cells
  const meta = Buffer.alloc(12 * tokens);
  for (let i = 0; i < tokens; i++) {
    meta.writeInt32LE(i, 12 * i); // pos
    meta.writeUInt32LE(1, 12 * i + 4); // one seq id
    meta.writeInt32LE(0, 12 * i + 8); // seq 0
  }
  parts.push(meta, u32(0), u32(layers)); // v_trans 0
  const rows = Buffer.alloc(tokens * rowBytes, 0x3c); // f16 ~1.0
  const rowSize = Buffer.alloc(8);
  rowSize.writeBigUInt64LE(BigInt(rowBytes));
  for (let kv = 0; kv < 2; kv++) for (let l = 0; l < layers; l++) parts.push(u32(1), rowSize, rows);
  return Buffer.concat(parts);
}

async function startDecode(): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      ...(process.env.BENCH_ENGINE ? [process.env.BENCH_ENGINE] : ["--import", "tsx", "engine/main.ts"]),
      "--role",
      "decode",
      "--model",
      "synthetic://tiny",
      "--flash-attention",
      "--host",
      "127.0.0.1",
      "--port",
      String(HTTP_PORT),
      "--kv-port",
      String(KV_PORT),
      "--parallel",
      "2",
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  await eventually(
    async () => {
      const res = await fetch(`http://127.0.0.1:${HTTP_PORT}/ready`);
      if (!res.ok) throw new Error(`/ready answered ${res.status}`);
    },
    { timeoutMs: 120_000, message: "decode pod ready" },
  );
  return child;
}

interface Sent {
  id: string;
  model: string;
  tokens: number;
  state: Buffer;
}

async function sendTcp(kv: KvStreamAddon, s: Sent, streams: number): Promise<void> {
  const json = JSON.stringify({ handoffId: s.id, model: s.model, tokens: s.tokens, vTransposed: false });
  const res = await kv.kvSend(s.state, "127.0.0.1", KV_PORT, s.id, json, TCP_CHUNK_BYTES, 60_000, streams);
  if (res.status !== 0) throw new Error(`tcp: status ${res.status} ${res.message}`);
  if ((res.streams ?? 1) !== streams) throw new Error(`tcp: asked for ${streams} streams, the state went over ${res.streams ?? 1}`);
}

async function sendHttp(s: Sent): Promise<void> {
  const header = { handoffId: s.id, model: s.model, tokens: Array.from({ length: s.tokens }, () => 0), vTransposed: false };
  const res = await fetch(`http://127.0.0.1:${HTTP_PORT}/internal/kv/${s.id}`, {
    method: "PUT",
    headers: { "content-type": "application/octet-stream", connection: "close" },
    body: Readable.toWeb(Readable.from(encodeKvHandoff(header, s.state))) as ReadableStream,
    duplex: "half",
  } as RequestInit);
  if (res.status !== 204) throw new Error(`http: ${res.status} ${await res.text()}`);
}

type Measured = { seconds: number[]; gbPerSecond: number };

/** ROUNDS states one after another over `path` (tcp_xN or http). */
async function measure(kv: KvStreamAddon, path: string, base: Omit<Sent, "id">): Promise<Measured> {
  const seconds: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const sent = { ...base, id: `bench-${path}-${r}` };
    const t0 = performance.now();
    await (path === "http" ? sendHttp(sent) : sendTcp(kv, sent, Number(path.slice(5))));
    seconds.push((performance.now() - t0) / 1000);
  }
  const total = seconds.reduce((a, b) => a + b, 0);
  const m = { seconds, gbPerSecond: (base.state.length * ROUNDS) / total / 1e9 };
  process.stderr.write(`bench:kv-transfer: ${path}: ${m.gbPerSecond.toFixed(3)} GB/s (${seconds.map((x) => x.toFixed(3)).join(", ")} s)\n`);
  return m;
}

function report(results: Record<string, Measured>, stateBytes: number): Record<string, unknown> {
  const single = results.tcp_x1;
  const striped = results[`tcp_x${TCP_STREAMS_DEFAULT}`];
  const tcp = striped ?? results[`tcp_x${STREAMS[0]}`]!;
  const out = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, loadavg: loadavg(), note: process.env.BENCH_ENGINE ? "device machine" : "shared machine" },
    decodeAddon: process.env.LLMFLEET_NATIVE_ADDON ?? "default",
    stateBytes,
    rounds: ROUNDS,
    /** TCP_STREAMS_DEFAULT connections (the default on machines of 16 CPUs or more) when measured, else the first count. */
    tcp,
    http: results.http,
    tcp_streams: Object.fromEntries(STREAMS.map((n) => [n, results[`tcp_x${n}`]])),
    ratio: tcp.gbPerSecond / results.http!.gbPerSecond,
    /** Striped (TCP_STREAMS_DEFAULT connections) over one connection, the v1 wire: the baseline measured in this run. */
    ratio_striped_vs_single: striped && single ? striped.gbPerSecond / single.gbPerSecond : null,
  };
  const line = STREAMS.map((n) => `x${n} ${results[`tcp_x${n}`]!.gbPerSecond.toFixed(3)}`).join(", ");
  console.log(
    `native TCP GB/s by connections: ${line}; HTTP (LFKV) ${results.http!.gbPerSecond.toFixed(3)}; x${TCP_STREAMS_DEFAULT} vs one connection ${out.ratio_striped_vs_single?.toFixed(2) ?? "n/a"}x, vs HTTP ${out.ratio.toFixed(2)}x`,
  );
  return out;
}

/** One state sent, taken and released: seconds of the send. */
interface Wire {
  kv: KvStreamAddon;
  l: { port: number; handle: number };
  state: Buffer;
}
async function wireRound({ kv, l, state }: Wire, id: string, streams: number): Promise<number> {
  const t0 = performance.now();
  const res = await kv.kvSend(state, "127.0.0.1", l.port, id, "{}", TCP_CHUNK_BYTES, 60_000, streams);
  const s = (performance.now() - t0) / 1000;
  if (res.status !== 0) throw new Error(`wire: status ${res.status} ${res.message}`);
  const taken = kv.kvTake(l.handle, id);
  if (!taken) throw new Error(`wire: ${id} was not staged`);
  kv.kvRelease?.(taken.state);
  return s;
}

/** ROUNDS states over `streams` connections after one that fills the pool. */
async function wireRounds(w: Wire, streams: number): Promise<Measured> {
  await wireRound(w, `wire-${streams}-warm`, streams);
  const seconds: number[] = [];
  for (let r = 0; r < ROUNDS; r++) seconds.push(await wireRound(w, `wire-${streams}-${r}`, streams));
  const gbPerSecond = (w.state.length * ROUNDS) / seconds.reduce((a, b) => a + b, 0) / 1e9;
  process.stderr.write(`bench:kv-transfer: wire x${streams}: ${gbPerSecond.toFixed(3)} GB/s (${seconds.map((x) => x.toFixed(4)).join(", ")} s)\n`);
  return { seconds, gbPerSecond };
}

/**
 * BENCH_WIRE=1: the wire alone, in this process (a listener of its own): each state is sent, taken
 * and released at once, so every round after the first reuses its pooled (page-locked) blocks, as
 * a decode pod that imports its hand-offs does. What the P/D path's send stage could reach; the
 * socket buffers are LLMFLEET_KV_SOCKET_BUFFER's (0 = the kernel's autotuning).
 */
async function wire(kv: KvStreamAddon): Promise<void> {
  const state = Buffer.alloc(STATE_MB * 2 ** 20, 0x3c);
  const l = kv.kvListen("127.0.0.1", 0, { maxBytes: 3 * state.length, maxConnections: 64 });
  const results: Record<string, Measured> = {};
  try {
    for (const streams of STREAMS) results[`tcp_x${streams}`] = await wireRounds({ kv, l, state }, streams);
  } finally {
    kv.kvClose(l.handle);
  }
  const out = {
    date: new Date().toISOString(),
    mode: "wire",
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, loadavg: loadavg() },
    socketBuffer: process.env.LLMFLEET_KV_SOCKET_BUFFER ?? "default (8 MiB asked)",
    pool: kv.kvPoolStats?.(),
    stateBytes: state.length,
    rounds: ROUNDS,
    tcp_streams: Object.fromEntries(STREAMS.map((n) => [n, results[`tcp_x${n}`]])),
  };
  console.log(`wire GB/s by connections: ${STREAMS.map((n) => `x${n} ${results[`tcp_x${n}`]!.gbPerSecond.toFixed(3)}`).join(", ")}`);
  await writeFile(process.env.BENCH_OUT ?? new URL("./results/kv-transfer-wire.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
}

async function main(): Promise<void> {
  const kv = await kvStreamAddon();
  if (!kv) throw new Error("the native addon (kv-stream) is not available");
  if (process.env.BENCH_WIRE === "1") return wire(kv);
  // Rows of 2 KiB (1024 f16 values) over 16 layers: STATE_MB MiB in about STATE_MB * 16 cells.
  const layers = 16;
  const rowBytes = 2048;
  const tokens = Math.floor((STATE_MB * 2 ** 20) / (2 * layers * rowBytes));
  const state = syntheticState(tokens, layers, rowBytes);
  const results: Record<string, Measured> = {};
  // A decode pod of its own per path: the states stay staged (never taken), and four paths of four
  // 512 MiB rounds filled one pod's hand-off memory (8 GiB at most) before the last one.
  for (const path of [...STREAMS.map((n) => `tcp_x${n}`), "http"]) {
    const decode = await startDecode();
    try {
      const info = (await (await fetch(`http://127.0.0.1:${HTTP_PORT}/internal/kv-transport`)).json()) as { model: string };
      results[path] = await measure(kv, path, { model: info.model, tokens, state });
    } finally {
      await new Promise((resolve) => (decode.once("exit", resolve), decode.kill("SIGTERM")));
    }
  }
  const out = report(results, state.length);
  await writeFile(process.env.BENCH_OUT ?? new URL("./results/kv-transfer.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
}

await main();
