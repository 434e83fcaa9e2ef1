/**
 * Synthetic llama-architecture GGUFs with random weights, deterministic from a seed: real
 * llama.cpp runs them, so mechanics tests (batching, KV hand-off, cancellation) need no
 * download, and GPU benchmarks can use any shape. Their text is gibberish by design.
 */
import { mkdir, rename, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { writeGguf, type GgmlDType, type GgufTensor, type GgufValue } from "./gguf-writer.ts";

export interface SyntheticShape {
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  nFf: number;
  contextLength: number;
  dtype: GgmlDType;
  /** Vocabulary size; filler pieces pad the base vocab (~470 tokens) up to it. Default: the base vocab. */
  nVocab?: number;
}

export const SYNTHETIC_PRESETS: Record<string, SyntheticShape> = {
  /** ~0.2 MB: fast standalone tests. */
  tiny: { nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 128, contextLength: 2048, dtype: "f32" },
  /** ~1B parameters in F16 (llama-3.2-1B-like shape) for GPU benchmarks. */
  "1b": { nEmbd: 2048, nLayer: 16, nHead: 32, nHeadKv: 8, nFf: 8192, contextLength: 8192, dtype: "f16" },
  /**
   * ~7.2B parameters in F16, 14.5 GB: the 7B-class reference model of ../shared/GPU.md (4096 wide, 32 layers,
   * 8 KV heads, FFN 14336, vocab 32000). A real vocabulary matters: the output projection is 262 MB
   * read every token, and every decoded sequence's 32,000 logits are copied back and sampled.
   */
  "8b": { nEmbd: 4096, nLayer: 32, nHead: 32, nHeadKv: 8, nFf: 14336, contextLength: 8192, dtype: "f16", nVocab: 32000 },
};

/** mulberry32: small, fast, deterministic uniform [0, 1) from a seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** SentencePiece-style vocab: specials, 256 byte tokens, printable ASCII and "▁word" pieces. */
export function syntheticVocab(size = 0): { tokens: string[]; scores: number[]; types: number[] } {
  const tokens = ["<unk>", "<s>", "</s>"];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(6);
  }
  const pieces = ["▁"];
  for (let c = 33; c < 127; c++) pieces.push(String.fromCharCode(c), `▁${String.fromCharCode(c)}`);
  for (const w of ["the", "of", "and", "is", "to", "in", "capital", "France", "Paris", "hello", "world"]) pieces.push(`▁${w}`);
  for (let i = 0; tokens.length + pieces.length < size; i++) pieces.push(`▁w${i}`);
  tokens.push(...pieces);
  types.push(...pieces.map(() => 1));
  const scores = tokens.map((t, i) => (types[i] === 1 ? -i / 100 : 0));
  return { tokens, scores, types };
}

/**
 * Random half-precision weights of magnitude about `scale`, made as bit patterns: a random sign,
 * mantissa and one of four exponents below the scale's. ~1 ns a weight (an 8B model in seconds).
 */
function randomHalves(rand: () => number, scale: number): (out: Uint16Array) => void {
  const top = Math.max(1, Math.min(30, Math.floor(Math.log2(scale)) + 15));
  let state = Math.floor(rand() * 0xffffffff) | 1;
  return (out) => {
    for (let i = 0; i < out.length; i++) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      const r = state >>> 0;
      const exp = Math.max(1, top - (r & 3));
      out[i] = ((r >>> 2) & 0x8000) | (exp << 10) | ((r >>> 8) & 0x3ff);
    }
  };
}

function metadata(shape: SyntheticShape, seed: number, vocab: ReturnType<typeof syntheticVocab>): [string, GgufValue][] {
  const u32 = (value: number): GgufValue => ({ type: "u32", value });
  return [
    ["general.architecture", { type: "string", value: "llama" }],
    ["general.name", { type: "string", value: `llmfleet-synthetic-${shape.nEmbd}x${shape.nLayer}-seed${seed}` }],
    ["general.file_type", u32(shape.dtype === "f32" ? 0 : 1)],
    ["llama.context_length", u32(shape.contextLength)],
    ["llama.embedding_length", u32(shape.nEmbd)],
    ["llama.block_count", u32(shape.nLayer)],
    ["llama.feed_forward_length", u32(shape.nFf)],
    ["llama.attention.head_count", u32(shape.nHead)],
    ["llama.attention.head_count_kv", u32(shape.nHeadKv)],
    ["llama.attention.layer_norm_rms_epsilon", { type: "f32", value: 1e-5 }],
    ["llama.rope.dimension_count", u32(shape.nEmbd / shape.nHead)],
    ["llama.rope.freq_base", { type: "f32", value: 10000 }],
    ["llama.vocab_size", u32(vocab.tokens.length)],
    ["tokenizer.ggml.model", { type: "string", value: "llama" }],
    ["tokenizer.ggml.tokens", { type: "strings", value: vocab.tokens }],
    ["tokenizer.ggml.scores", { type: "f32s", value: vocab.scores }],
    ["tokenizer.ggml.token_type", { type: "i32s", value: vocab.types }],
    ["tokenizer.ggml.unknown_token_id", u32(0)],
    ["tokenizer.ggml.bos_token_id", u32(1)],
    ["tokenizer.ggml.eos_token_id", u32(2)],
    ["tokenizer.ggml.add_bos_token", { type: "bool", value: true }],
  ];
}

function tensors(shape: SyntheticShape, seed: number, nVocab: number): GgufTensor[] {
  const rand = prng(seed);
  const kv = (shape.nEmbd / shape.nHead) * shape.nHeadKv;
  const random = (name: string, dims: number[]): GgufTensor => {
    const scale = 1 / Math.sqrt(dims[0]!);
    const fill = (out: Float32Array): void => {
      for (let i = 0; i < out.length; i++) out[i] = (rand() * 2 - 1) * scale * 1.7;
    };
    return { name, dims, dtype: shape.dtype, fill, fillHalf: randomHalves(rand, scale * 1.7) };
  };
  const ones = (name: string): GgufTensor => ({ name, dims: [shape.nEmbd], dtype: "f32", fill: (out) => out.fill(1) });
  const list: GgufTensor[] = [random("token_embd.weight", [shape.nEmbd, nVocab]), ones("output_norm.weight"), random("output.weight", [shape.nEmbd, nVocab])];
  for (let l = 0; l < shape.nLayer; l++) {
    const b = `blk.${l}`;
    list.push(
      ones(`${b}.attn_norm.weight`),
      random(`${b}.attn_q.weight`, [shape.nEmbd, shape.nEmbd]),
      random(`${b}.attn_k.weight`, [shape.nEmbd, kv]),
      random(`${b}.attn_v.weight`, [shape.nEmbd, kv]),
      random(`${b}.attn_output.weight`, [shape.nEmbd, shape.nEmbd]),
      ones(`${b}.ffn_norm.weight`),
      random(`${b}.ffn_gate.weight`, [shape.nEmbd, shape.nFf]),
      random(`${b}.ffn_up.weight`, [shape.nEmbd, shape.nFf]),
      random(`${b}.ffn_down.weight`, [shape.nFf, shape.nEmbd]),
    );
  }
  return list;
}

/** Writes the model unless `path` exists already (same shape + seed = same bytes). */
export async function writeSyntheticModel(path: string, shape: SyntheticShape, seed = 1): Promise<string> {
  if (await stat(path).then(() => true, () => false)) return path;
  await mkdir(dirname(path), { recursive: true });
  const vocab = syntheticVocab(shape.nVocab);
  const tmp = `${path}.${process.pid}.tmp`;
  await writeGguf(tmp, metadata(shape, seed, vocab), tensors(shape, seed, vocab.tokens.length));
  await rename(tmp, path);
  return path;
}
