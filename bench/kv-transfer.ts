/**
 * `npm run bench:kv-transfer`: the hand-off mechanisms alone, GB/s, into a real decode pod process
 * (`npm run engine -- --role decode`, its own receive paths), from this process with the prefill
 * pod's own send code: the native TCP stream (kvSend, what --kv-transport tcp runs) against the
 * LFKV stream over HTTP (encodeKvHandoff + PUT /internal/kv/:id, the earlier path, and the
 * fallback). The states are well-formed llama.cpp sequence states of STATE_MB MiB in the decode
 * pod's own layout (so neither path rewrites them), staged by the decode pod and never imported.
 * Each mechanism sends ROUNDS states one after another; the figure is bytes over the seconds from
 * the start of the send to the decode pod's "staged". Writes bench/results/kv-transfer.json.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { Readable } from "node:stream";
import { eventually } from "../testing/eventually.ts";
import { encodeKvHandoff } from "../engine/pd/kv-wire.ts";
import { kvStreamAddon, TCP_CHUNK_BYTES, type KvStreamAddon } from "../engine/pd/kv-transport.ts";

const STATE_MB = Number(process.env.BENCH_STATE_MB ?? 256);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);
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
    ["--import", "tsx", "engine/main.ts", "--role", "decode", "--model", "synthetic://tiny", "--flash-attention", "--host", "127.0.0.1", "--port", String(HTTP_PORT), "--kv-port", String(KV_PORT), "--parallel", "2"],
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

async function sendTcp(kv: KvStreamAddon, id: string, header: { model: string; tokens: number }, state: Buffer): Promise<void> {
  const json = JSON.stringify({ handoffId: id, ...header, vTransposed: false });
  const res = await kv.kvSend(state, "127.0.0.1", KV_PORT, id, json, TCP_CHUNK_BYTES, 60_000);
  if (res.status !== 0) throw new Error(`tcp: status ${res.status} ${res.message}`);
}

async function sendHttp(id: string, header: Parameters<typeof encodeKvHandoff>[0], state: Buffer): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${HTTP_PORT}/internal/kv/${id}`, {
    method: "PUT",
    headers: { "content-type": "application/octet-stream", connection: "close" },
    body: Readable.toWeb(Readable.from(encodeKvHandoff(header, state))) as ReadableStream,
    duplex: "half",
  } as RequestInit);
  if (res.status !== 204) throw new Error(`http: ${res.status} ${await res.text()}`);
}

async function main(): Promise<void> {
  const kv = await kvStreamAddon();
  if (!kv) throw new Error("the native addon (kv-stream) is not available");
  const decode = await startDecode();
  try {
    const info = (await (await fetch(`http://127.0.0.1:${HTTP_PORT}/internal/kv-transport`)).json()) as { model: string; layout: unknown };
    // Rows of 2 KiB (1024 f16 values) over 16 layers: STATE_MB MiB in about STATE_MB * 16 cells.
    const layers = 16;
    const rowBytes = 2048;
    const tokens = Math.floor((STATE_MB * 2 ** 20) / (2 * layers * rowBytes));
    const state = syntheticState(tokens, layers, rowBytes);
    const header = { model: info.model, tokens: Array.from({ length: tokens }, () => 0), vTransposed: false };
    const results: Record<string, { seconds: number[]; gbPerSecond: number }> = {};
    for (const path of ["tcp", "http"] as const) {
      const seconds: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        const id = `bench-${path}-${r}`;
        const t0 = performance.now();
        await (path === "tcp" ? sendTcp(kv, id, { model: info.model, tokens }, state) : sendHttp(id, { ...header, handoffId: id }, state));
        seconds.push((performance.now() - t0) / 1000);
      }
      const total = seconds.reduce((a, b) => a + b, 0);
      results[path] = { seconds, gbPerSecond: (state.length * ROUNDS) / total / 1e9 };
      process.stderr.write(`bench:kv-transfer: ${path}: ${results[path].gbPerSecond.toFixed(3)} GB/s (${seconds.map((s) => s.toFixed(3)).join(", ")} s)\n`);
    }
    const out = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, loadavg: loadavg(), note: "shared machine" },
      stateBytes: state.length,
      rounds: ROUNDS,
      tcp: results.tcp,
      http: results.http,
      ratio: results.tcp!.gbPerSecond / results.http!.gbPerSecond,
    };
    console.log(`native TCP ${out.tcp!.gbPerSecond.toFixed(3)} GB/s vs HTTP (LFKV) ${out.http!.gbPerSecond.toFixed(3)} GB/s: ${out.ratio.toFixed(2)}x`);
    await writeFile(new URL("./results/kv-transfer.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
  } finally {
    await new Promise((resolve) => (decode.once("exit", resolve), decode.kill("SIGTERM")));
  }
}

await main();
