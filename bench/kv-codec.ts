/**
 * `npm run bench:kv-codec [-- --quick]`: the KV codecs on a real sequence state of the default
 * model (Gemma 3 270M, CPU). For each codec: size vs the F16 state and vs the int8 baseline,
 * encode/decode MB/s (of F16 state), and quality after loading the decoded state: greedy
 * agreement (fraction of 256 greedy tokens generated before the first divergence from the
 * exact state) and the mean KL divergence of the next-token distribution over the first steps
 * (exact || decoded). Writes bench/results/kv-codec.json; `recommended` is the default codec.
 */
import { readFile, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, LlamaLogLevel, type LlamaContextSequence, type Token } from "node-llama-cpp";
import { DEFAULT_CODEC, kvCodec } from "../engine/kvcodec/codec.ts";
import { ensureDefaultModel } from "../engine/model/fetch.ts";

const quick = process.argv.includes("--quick");
const CONTEXT_TOKENS = quick ? 512 : 2048;
const GENERATE = 256;
const KL_STEPS = 8;
const CODECS = ["none", "lossless", "int8", "qdelta"];
const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const TEXT =
  "The history of the lighthouse begins with fires lit on hills above the sea. Keepers tended the lamps through storms, logged every ship, and trimmed the wicks at midnight. ";

interface Run {
  tokens: Token[];
  probs: Map<Token, number>[];
}

async function generate(seq: LlamaContextSequence, last: Token): Promise<Run> {
  const run: Run = { tokens: [], probs: [] };
  for await (const out of seq.evaluateWithMetadata([last], { probabilities: true }, { temperature: 0 })) {
    run.tokens.push(out.token);
    if (run.probs.length < KL_STEPS) run.probs.push(out.probabilities);
    if (run.tokens.length >= GENERATE) break;
  }
  return run;
}

function agreement(ref: Run, got: Run): { agreement: number; kl: number } {
  let same = 0;
  while (same < GENERATE && ref.tokens[same] === got.tokens[same]) same++;
  const steps = Math.min(KL_STEPS, same + 1, got.probs.length);
  let kl = 0;
  for (let s = 0; s < steps; s++) {
    for (const [tok, p] of ref.probs[s]!) if (p > 0) kl += (p * Math.log(p / Math.max(got.probs[s]!.get(tok) ?? 0, 1e-12))) / steps;
  }
  return { agreement: same / GENERATE, kl };
}

async function loadAndGenerate(seq: LlamaContextSequence, state: Buffer, last: Token): Promise<Run> {
  const path = join(tmpdir(), `llmfleet-kv-codec-${process.pid}.ggsq`);
  await writeFile(path, state);
  await seq.clearHistory();
  await seq.loadStateFromFile(path, { acceptRisk: true });
  await rm(path, { force: true });
  return generate(seq, last);
}

function timed<T>(fn: () => T): { value: T; seconds: number } {
  const t0 = performance.now();
  const value = fn();
  return { value, seconds: (performance.now() - t0) / 1000 };
}

async function main(): Promise<void> {
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: threads, logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: await ensureDefaultModel() });
  const context = await model.createContext({
    sequences: 1,
    contextSize: CONTEXT_TOKENS + GENERATE + 64,
    threads: { ideal: threads, min: threads },
    swaFullCache: true,
    flashAttention: false,
  });
  const seq = context.getSequence();
  let text = "";
  while (model.tokenize(text).length < CONTEXT_TOKENS) text += TEXT;
  const tokens = [model.tokens.bos!, ...model.tokenize(text)].slice(0, CONTEXT_TOKENS);
  await seq.evaluateWithoutGeneratingNewTokens(tokens.slice(0, -1));
  const path = join(tmpdir(), `llmfleet-kv-codec-ref-${process.pid}.ggsq`);
  await seq.saveStateToFile(path);
  const raw = await readFile(path);
  await rm(path, { force: true });
  const last = tokens.at(-1)!;
  const reference = await loadAndGenerate(seq, raw, last);
  const mb = raw.length / 1e6;
  const results: Record<string, object> = {};
  let int8Bytes = NaN;
  for (const name of CODECS) {
    const codec = kvCodec(name);
    const enc = timed(() => codec.encode(raw));
    const dec = timed(() => codec.decode(enc.value));
    if (name === "int8") int8Bytes = enc.value.length;
    const quality = agreement(reference, await loadAndGenerate(seq, dec.value, last));
    results[name] = {
      bytes: enc.value.length,
      size_ratio_vs_f16: enc.value.length / raw.length,
      lossless: dec.value.equals(raw),
      greedy_agreement: quality.agreement,
      logit_kl: quality.kl,
      encode_mb_s: mb / enc.seconds,
      decode_mb_s: mb / dec.seconds,
    };
    process.stderr.write(`${name}: ${JSON.stringify(results[name])}\n`);
  }
  for (const r of Object.values(results) as { bytes: number; size_ratio_vs_int8?: number }[]) r.size_ratio_vs_int8 = r.bytes / int8Bytes;
  const recommended = DEFAULT_CODEC;
  const out = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "unknown", threads },
    model: "gemma-3-270m Q4_K_M",
    quick,
    contextTokens: CONTEXT_TOKENS,
    stateBytes: raw.length,
    generatedTokens: GENERATE,
    klSteps: KL_STEPS,
    recommended,
    ...results[recommended],
    // "default" stays uncompressed on CPU: a JS decode is slower than a loopback/SSD read.
    // Where the tier is network-bound (S3 across zones), qdelta's smaller entries win.
    recommendedCompressed: "qdelta",
    compressed: results.qdelta,
    codecs: results,
  };
  await writeFile(new URL("./results/kv-codec.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  await context.dispose();
  await model.dispose();
  await llama.dispose();
}

await main();
