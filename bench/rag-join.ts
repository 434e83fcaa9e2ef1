/**
 * What the RAG benchmarks share (bench/rag.ts, bench/rag-probe.ts): the pinned corpus cut into
 * documents by tokens, the prompts drawn from it, and the in-process quality of a join against
 * a full prefill on the native engine (greedy agreement and logit KL over the 64 tokens full
 * prefill generates, teacher-forced; the perturbation floor as bench/kv-quality.ts measures it).
 * The join here is the product's: engine/serving/documents.ts lays the prompt out and plans it,
 * and the KV moves as NativeRuntime.moveIn moves it (seqAdd, then seqCp from a scratch sequence).
 */
import { loadNativeAddon } from "../engine/native/binding.ts";
import type { NativeEngine } from "../engine/native/binding.ts";
import { joinPlan, withDocuments, type DocumentLayout } from "../engine/serving/documents.ts";
import { FLOOR_FLIPS, FLOOR_SEEDS, perturbed } from "./kv-floor.ts";
import { textAtCommit } from "./pinned-texts.ts";

/** Rows of the teacher-forced comparison: the tokens full prefill generates. */
export const GEN = 64;

/**
 * The corpus is this repository's documentation as it was at this commit (git show), so runs
 * compare on the same documents whatever the working tree holds (bench:rag's device mode reads the
 * working tree's files instead: the GPU machine has no history).
 */
export const CORPUS_AT = "a34888bb8395f6339fb65abb5e46edd81bae0e1b";
export const CORPUS_SOURCES = [
  "README.md",
  "engine/README.md",
  "docs/reference.md",
  "docs/kv-store.md",
  "docs/autoscaling.md",
  "docs/images.md",
  "docs/security.md",
  "docs/nodegroups.md",
  "docs/api.md",
  "docs/concepts.md",
  "docs/runbooks.md",
];

/** Where the corpus's files are read from: `source`'s text. */
export type CorpusReader = (source: string) => string;

/** The corpus's files as they were at CORPUS_AT (git show): the default. */
export const pinnedCorpus: CorpusReader = (source) => textAtCommit(CORPUS_AT, source, "bench:rag");

export const DOC_MIN_TOKENS = 256;
export const DOC_MAX_TOKENS = 1024;

/** A seeded generator (LCG): the same draws in every run. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

/**
 * The corpus's files cut into documents of DOC_MIN_TOKENS..DOC_MAX_TOKENS tokens (as `count`
 * counts them): whole paragraphs, each document aiming at a seeded length from 256 to 768 tokens;
 * a paragraph longer than the maximum alone is left out, a file's remainder under the minimum too.
 * The files are read by `read` (default: at CORPUS_AT).
 */
export function corpusDocuments(count: (text: string) => number, read: CorpusReader = pinnedCorpus): string[] {
  const cut = cutCorpus(read);
  let step = cut.next();
  while (!step.done) step = cut.next(count(step.value));
  return step.value;
}

/** corpusDocuments with a count that answers later (the served model's tokenizer, over HTTP). */
export async function corpusDocumentsAsync(count: (text: string) => Promise<number>, read: CorpusReader): Promise<string[]> {
  const cut = cutCorpus(read);
  let step = cut.next();
  while (!step.done) step = cut.next(await count(step.value));
  return step.value;
}

/** The cut itself: yields each text it needs counted, is sent its count, returns the documents. */
function* cutCorpus(read: CorpusReader): Generator<string, string[], number> {
  const r = rng(26);
  const docs: string[] = [];
  for (const source of CORPUS_SOURCES) {
    const paragraphs = read(source)
      .split(/\n\n+/)
      .map((p) => p.trim())
      .filter(Boolean);
    let cur: string[] = [];
    let target = DOC_MIN_TOKENS + Math.floor(r() * 512);
    for (const p of paragraphs) {
      if ((yield p) > DOC_MAX_TOKENS) continue;
      if (cur.length > 0 && (yield [...cur, p].join("\n\n")) > DOC_MAX_TOKENS) cur = [];
      cur.push(p);
      const text = cur.join("\n\n");
      if ((yield text) >= target) {
        docs.push(text);
        cur = [];
        target = DOC_MIN_TOKENS + Math.floor(r() * 512);
      }
    }
  }
  return docs;
}

/** A request of the benchmark: which documents in which order, and the question after them. */
export interface RagPrompt {
  docs: number[];
  question: string;
}

/**
 * `sizes.length` prompts of sizes[k] distinct documents each, drawn from the first `pool`
 * documents, so documents come back across prompts in new orders; each third prompt keeps the
 * previous prompt's first document (a shared leading document: what prefix reuse can reuse).
 */
export function drawPrompts(pool: number, sizes: readonly number[], seed: number): RagPrompt[] {
  const r = rng(seed);
  const out: RagPrompt[] = [];
  for (const [k, size] of sizes.entries()) {
    const lead = k % 3 === 2 ? out[k - 1]!.docs[0]! : undefined;
    const rest = [...Array(pool).keys()].filter((i) => i !== lead).sort(() => r() - 0.5);
    const docs = lead === undefined ? rest.slice(0, size) : [lead, ...rest.slice(0, size - 1)];
    out.push({ docs, question: `\n\nQuestion ${k + 1}: what do the documents above say about how the engine keeps and reuses the KV cache? Answer:` });
  }
  return out;
}

/** Greedy agreement and mean KL(full || got) of two runs of GEN rows of logits. */
export function compareLogits(ref: Float32Array, got: Float32Array, vocab: number): { agreement: number; kl: number } {
  let agree = 0;
  let kl = 0;
  for (let r = 0; r < GEN; r++) {
    const a = ref.subarray(r * vocab, (r + 1) * vocab);
    const b = got.subarray(r * vocab, (r + 1) * vocab);
    if (argmax(a) === argmax(b)) agree++;
    const la = logSumExp(a);
    const lb = logSumExp(b);
    for (let i = 0; i < vocab; i++) {
      const pa = a[i]! - la;
      kl += (Math.exp(pa) * (pa - (b[i]! - lb))) / GEN;
    }
  }
  return { agreement: agree / GEN, kl };
}

function argmax(x: Float32Array): number {
  let m = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[m]!) m = i;
  return m;
}

function logSumExp(x: Float32Array): number {
  let m = -Infinity;
  for (const v of x) m = Math.max(m, v);
  let s = 0;
  for (const v of x) s += Math.exp(v - m);
  return m + Math.log(s);
}

const I32 = (a: readonly number[]): Int32Array => Int32Array.from(a);

/** `tokens` evaluated into `seq` from `pos`, in batches of 512, sampling nothing. */
export async function prefill(e: NativeEngine, seq: number, pos: number, tokens: readonly number[]): Promise<void> {
  for (let i = 0; i < tokens.length; i += 512) {
    const part = tokens.slice(i, i + 512);
    await e.step(I32([seq]), I32([pos + i]), I32([part.length]), I32(part), Uint8Array.from([0]));
  }
}

/** Full prefill's answer to one prompt: its context's state, greedy continuation and teacher-forced logits. */
export interface Reference {
  layout: DocumentLayout;
  /** The context: all prompt tokens but the last, which every path feeds to the sampler. */
  context: number[];
  state: Buffer;
  /** The last prompt token, then the greedy continuation but its last token (what is teacher-forced). */
  forced: number[];
  logits: Float32Array;
  ms: number;
}

export interface Quality {
  agreement: number;
  kl: number;
}

/**
 * The native engine on one model with the sequences the probe needs: 0 full prefill, 1 the join,
 * 2 spare, 3 scratch (documents alone). Unified KV and full sliding-window cache, as the product's
 * joining pods load it.
 */
export class JoinProbe implements AsyncDisposable {
  private readonly chunks = new Map<string, Buffer>();

  private constructor(readonly e: NativeEngine) {}

  static async open(model: string, threads: number, contextSize = 16384): Promise<JoinProbe> {
    const addon = await loadNativeAddon();
    return new JoinProbe(await addon.load(model, { contextSize, sequences: 4, threads, kvUnified: true, swaFull: true, batchSize: 512 }));
  }

  get vocab(): number {
    return this.e.info().nVocab;
  }

  /** The runtime's tokenize (BOS first), as the engine's own withDocuments sees it. */
  tokenize = (text: string): number[] => Array.from(this.e.tokenize(text, true, false));

  layout(documents: readonly string[], question: string): DocumentLayout {
    return withDocuments(this, documents, this.tokenize(question));
  }

  /** Full prefill of the layout's context (sequence 0), its GEN greedy tokens and their teacher-forced logits. */
  async reference(layout: DocumentLayout): Promise<Reference> {
    const { e } = this;
    const context = layout.tokens.slice(0, -1);
    const last = layout.tokens.at(-1)!;
    e.seqRm(0, -1, -1);
    const t0 = performance.now();
    await prefill(e, 0, 0, context);
    const ms = performance.now() - t0;
    const state = await e.stateGetFile(0, I32(context));
    e.setSampler(0, 0, 0, 1);
    const cont: number[] = [];
    let input = last;
    while (cont.length < GEN) {
      const got = await e.step(I32([0]), I32([context.length + cont.length]), I32([1]), I32([input]), Uint8Array.from([1]));
      input = got[0]!;
      cont.push(input);
    }
    e.seqRm(0, context.length, -1);
    const forced = [last, ...cont.slice(0, GEN - 1)];
    const logits = await e.evalLogits(0, context.length, I32(forced));
    e.seqRm(0, -1, -1);
    return { layout, context, state, forced, logits, ms };
  }

  /** A document's own state ([lead] + its tokens computed alone), kept for the next prompt. */
  private async chunk(own: number[]): Promise<Buffer> {
    const key = own.join(",");
    const have = this.chunks.get(key);
    if (have) return have;
    this.e.seqRm(3, -1, -1);
    await prefill(this.e, 3, 0, own);
    const state = await this.e.stateGetFile(3, I32(own));
    this.e.seqRm(3, -1, -1);
    this.chunks.set(key, state);
    return state;
  }

  /** Computes every document's own state of a layout ahead (so a join's time is the join's alone). */
  async warm(layout: DocumentLayout): Promise<void> {
    for (const [s, end] of layout.spans) await this.chunk([...layout.tokens.slice(0, layout.lead), ...layout.tokens.slice(s, end)]);
  }

  /**
   * Sequence 1 holding the context as the engine builds it at `recompute`: the lead, the planned
   * documents from their own KV, the rest in place (NativeSequence.evaluateJoined, nothing
   * reused). A document cut where its own state has no sliding-window cells (before its last
   * window) is not joined: computed in place from its start, as NativeRuntime.moveIn does.
   * Returns the milliseconds it took (documents' own states already computed) and the tokens joined.
   */
  async join(ref: Reference, recompute: number): Promise<{ ms: number; joined: number }> {
    const { e } = this;
    const { tokens, lead } = ref.layout;
    const n = ref.context.length;
    e.seqRm(1, -1, -1);
    const t0 = performance.now();
    await prefill(e, 1, 0, tokens.slice(0, lead));
    let at = lead;
    let joined = 0;
    for (const { start, end, keep } of joinPlan(ref.layout, recompute).filter((j) => j.end <= n)) {
      if (start > at) await prefill(e, 1, at, tokens.slice(at, start));
      at = start;
      if (!(await this.moveIn([...tokens.slice(0, lead), ...tokens.slice(start, end)], lead, { start, keep }))) break;
      joined += keep - start;
      at = keep;
      if (keep < end) break;
    }
    await prefill(e, 1, at, ref.context.slice(at));
    return { ms: performance.now() - t0, joined };
  }

  /** A document's own state moved into sequence 1 at `start`, up to `keep`; false (nothing moved) when the sequence cannot go on from `keep`. */
  private async moveIn(own: number[], lead: number, to: { start: number; keep: number }): Promise<boolean> {
    const { e } = this;
    const state = await this.chunk(own);
    e.seqRm(3, -1, -1);
    e.stateSetFile(3, state);
    if (lead > 0) e.seqRm(3, 0, lead);
    e.seqAdd(3, lead, -1, to.start - lead);
    e.seqCp(3, 1, to.start, to.keep);
    e.seqRm(3, -1, -1);
    if (e.seqPosMax(1) === to.keep - 1) return true;
    e.seqRm(1, to.start, -1);
    return false;
  }

  /** The quality of sequence 1's context (after join) against full prefill's. */
  async quality(ref: Reference): Promise<Quality> {
    const n = ref.context.length;
    const got = await this.e.evalLogits(1, n, I32(ref.forced));
    this.e.seqRm(1, -1, -1);
    return compareLogits(ref.logits, got, this.vocab);
  }

  /** The perturbation floor (bench/kv-quality.ts): FLOOR_FLIPS one-ulp flips of full prefill's state, FLOOR_SEEDS seeds, averaged. */
  async floor(ref: Reference): Promise<Quality> {
    const runs: Quality[] = [];
    for (let seed = 1; seed <= FLOOR_SEEDS; seed++) {
      this.e.seqRm(1, -1, -1);
      this.e.stateSetFile(1, perturbed(ref.state, FLOOR_FLIPS, seed));
      runs.push(await this.quality(ref));
    }
    return { agreement: runs.reduce((a, r) => a + r.agreement, 0) / runs.length, kl: runs.reduce((a, r) => a + r.kl, 0) / runs.length };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.e.dispose();
  }
}
