/** The GPU benchmark's baseline: llama.cpp's own llama-batched-bench, built from the same source as the engine's addon. */
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface BatchedBenchRow {
  pp: number;
  tg: number;
  pl: number;
  speed_pp: number;
  speed_tg: number;
  t_tg: number;
}

export interface BatchedBenchOptions {
  binary: string;
  model: string;
  parallel: number[];
  promptTokens: number;
  genTokens: number;
  flashAttention: boolean;
  kvUnified: boolean;
}

/** Runs llama-batched-bench (all layers on the GPU) and returns its rows (jsonl output). */
export async function batchedBench(o: BatchedBenchOptions): Promise<BatchedBenchRow[]> {
  const maxPl = Math.max(...o.parallel);
  const ctx = maxPl * (o.promptTokens + o.genTokens) + 256;
  const args = ["-m", o.model, "-c", String(ctx), "-b", "2048", "-ub", "512", "-ngl", "99", "--output-format", "jsonl"];
  args.push("-npp", String(o.promptTokens), "-ntg", String(o.genTokens), "-npl", o.parallel.join(","), "-fa", o.flashAttention ? "on" : "off");
  args.push(o.kvUnified ? "-kvu" : "-no-kvu");
  const { stdout, stderr } = await run(o.binary, args, { maxBuffer: 64 * 1024 * 1024 });
  const rows = `${stdout}\n${stderr}`
    .split("\n")
    .filter((l) => l.startsWith("{") && l.includes('"speed_tg"'))
    .map((l) => JSON.parse(l) as BatchedBenchRow);
  if (rows.length === 0) throw new Error(`llama-batched-bench printed no results:\n${stderr.slice(-2000)}`);
  return rows;
}

export interface LlamaBenchRow {
  n_gen: number;
  flash_attn: boolean | number;
  avg_ts: number;
  stddev_ts: number;
  /** true: run with `-ot token_embd.weight=CUDA0` (the embeddings on the GPU, as the engine places them). */
  gpuEmbeddings: boolean;
}

/** llama-bench's single-sequence generation (tg) speed with flash attention, embeddings where llama.cpp puts them (CPU) and on the GPU. */
export async function llamaBenchDecode(binary: string, model: string, genTokens: number): Promise<LlamaBenchRow[]> {
  const rows: LlamaBenchRow[] = [];
  for (const gpuEmbeddings of [false, true]) {
    const args = ["-m", model, "-p", "0", "-n", String(genTokens), "-r", "3", "-ngl", "99", "-fa", "1", "-o", "json"];
    if (gpuEmbeddings) args.push("-ot", "token_embd\\.weight=CUDA0");
    const { stdout } = await run(binary, args, { maxBuffer: 64 * 1024 * 1024 });
    const got = JSON.parse(stdout.slice(stdout.indexOf("["))) as LlamaBenchRow[];
    rows.push(...got.map(({ n_gen, flash_attn, avg_ts, stddev_ts }) => ({ n_gen, flash_attn, avg_ts, stddev_ts, gpuEmbeddings })));
  }
  return rows;
}
