/**
 * `npm run kvcodec:query-gains [-- --check]`: regenerates engine/kvcodec/query-gains.ts (the qsink8
 * codec's query-aware key gains) from the default model's GGUF, by the derivation that file's
 * header states: per layer, pair i's query energy (w_i² + w_{i+128}²) / 2 of
 * blk.N.attn_q_norm.weight, gain (energy / max)^½ floored at 0.1, over the pairs' geometric mean,
 * stored as int8 codes of 32·log2(gain), base64. `--check` exits 1 when the file differs.
 */
import { open, readFile, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { GgmlType, readGgufFileInfo } from "node-llama-cpp";
import { ensureDefaultModel } from "../../engine/model/fetch.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const OUT = resolve(ROOT, "engine/kvcodec/query-gains.ts");
const HEAD_DIM = 256;
const PAIRS = HEAD_DIM / 2;

async function qNormWeights(path: string): Promise<Map<number, Float32Array>> {
  const info = await readGgufFileInfo(path, { readTensorInfo: true });
  const file = await open(path, "r");
  const out = new Map<number, Float32Array>();
  try {
    for (const t of info.fullTensorInfo ?? info.tensorInfo ?? []) {
      const m = /^blk\.(\d+)\.attn_q_norm\.weight$/.exec(t.name);
      if (!m) continue;
      if (t.ggmlType !== GgmlType.F32 || Number(t.dimensions[0]) !== HEAD_DIM) throw new Error(`${t.name}: expected ${HEAD_DIM} f32 values`);
      const buf = Buffer.alloc(HEAD_DIM * 4);
      await file.read(buf, 0, buf.length, Number(t.fileOffset));
      out.set(Number(m[1]), new Float32Array(buf.buffer, buf.byteOffset, HEAD_DIM));
    }
  } finally {
    await file.close();
  }
  return out;
}

function codes(w: Float32Array): string {
  const energy = Array.from({ length: PAIRS }, (_, i) => (w[i]! ** 2 + w[i + PAIRS]! ** 2) / 2);
  const max = Math.max(...energy);
  const gains = energy.map((e) => Math.max(0.1, Math.sqrt(e / max)));
  const geo = Math.exp(gains.reduce((a, g) => a + Math.log(g), 0) / PAIRS);
  const c = Int8Array.from(gains, (g) => Math.max(-128, Math.min(127, Math.round(32 * Math.log2(g / geo)))));
  return Buffer.from(c.buffer).toString("base64");
}

/** Sections as the state lists them: full-attention layers (every 6th block from 5), then sliding-window ones, each in order. */
export function sections(blocks: number[]): Record<number, number[]> {
  const global = blocks.filter((b) => b % 6 === 5);
  const local = blocks.filter((b) => b % 6 !== 5);
  return { [global.length]: global, [local.length]: local };
}

/** The gains table of a Gemma 3 GGUF: per section size, per layer, base64 codes. */
export async function deriveQueryGains(modelPath: string): Promise<Record<number, string[]>> {
  const weights = await qNormWeights(modelPath);
  const blocks = [...weights.keys()].sort((a, b) => a - b);
  return Object.fromEntries(Object.entries(sections(blocks)).map(([n, bs]) => [Number(n), bs.map((b) => codes(weights.get(b)!))]));
}

async function main(): Promise<void> {
  const derived = await deriveQueryGains(await ensureDefaultModel());
  const current = await readFile(OUT, "utf8");
  const table = Object.entries(derived)
    .map(([n, layers]) => `  ${n}: [\n${layers.map((c) => `    "${c}",`).join("\n")}\n  ],`)
    .join("\n");
  const start = current.indexOf("export const GEMMA3_270M_QUERY_GAINS");
  const end = current.indexOf("};", start) + 2;
  const next = `${current.slice(0, start)}export const GEMMA3_270M_QUERY_GAINS: Record<number, string[]> = {\n${table}\n};${current.slice(end)}`;
  if (process.argv.includes("--check")) {
    if (next !== current) {
      process.stderr.write(`${OUT} differs from what scripts/kvcodec/query-gains.ts derives from the model\n`);
      process.exit(1);
    }
    process.stdout.write("query gains: up to date\n");
    return;
  }
  await writeFile(OUT, next);
  process.stdout.write(`wrote ${OUT}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) await main();
