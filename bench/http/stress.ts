/**
 * Traffic that joins, leaves and cancels, as real clients do (the benchmark's lockstep sequences
 * never do): random arrival gaps, prompts from one token to near the context size, max_tokens from
 * 1 to hundreds, stop strings, clients that hang up mid-stream, requests that fill the context
 * exactly and ones that do not fit, more clients than the engine has sequences. Every request must
 * end with a whole answer, a deliberate hang-up, or the clear 400 its size calls for.
 * Used by the CPU stress test (engine/stress.test.ts) and by `npm run bench:http -- --section stress`.
 */
import { prng } from "../../engine/model/synthetic-gguf.ts";
import type { CompletionRequest, LoadClient, StreamOutcome } from "./load-client.ts";

/** Words that are one token each in every synthetic vocabulary (engine/model/synthetic-gguf.ts has a "▁x" piece per character). */
const WORDS = "abcdefghijklmnopqrstuvwxyz".split("");

export interface StressPlan {
  request: CompletionRequest;
  /** The engine must refuse it with 400 context_length_exceeded (prompt + max_tokens over the context). */
  tooLong: boolean;
}

/**
 * One request of the stress mix. `ctxSize` is the engine's tokens per sequence; prompts are
 * counted in words (one token each, plus BOS), so sizes near the limit are exact.
 */
export function stressRequest(rnd: () => number, ctxSize: number, maxGen: number): StressPlan {
  const kind = rnd();
  const words = (n: number): string => Array.from({ length: Math.max(1, n) }, () => WORDS[Math.floor(rnd() * WORDS.length)]!).join(" ");
  const promptTokens = (n: number): number => n + 1; // BOS
  if (kind < 0.08) {
    // Fills the context exactly: prompt + max_tokens == ctxSize.
    const n = 1 + Math.floor(rnd() * (ctxSize - 4));
    return { request: { prompt: words(n), maxTokens: ctxSize - promptTokens(n) }, tooLong: false };
  }
  if (kind < 0.12) {
    // One token over the context.
    const n = 1 + Math.floor(rnd() * (ctxSize - 4));
    return { request: { prompt: words(n), maxTokens: ctxSize - promptTokens(n) + 1 }, tooLong: true };
  }
  const long = rnd() < 0.2;
  const n = long ? Math.floor(ctxSize * (0.5 + 0.45 * rnd())) : 1 + Math.floor(rnd() * 64);
  const room = ctxSize - promptTokens(n);
  const maxTokens = Math.max(1, Math.min(room, 1 + Math.floor(rnd() * rnd() * maxGen)));
  const request: CompletionRequest = { prompt: words(n), maxTokens };
  if (rnd() < 0.15) request.extra = { stop: [" the"] };
  if (rnd() < 0.15) request.disconnectAfterChunks = 1 + Math.floor(rnd() * 8);
  return { request, tooLong: false };
}

export interface StressReport {
  clients: number;
  seconds: number;
  requests: number;
  complete: number;
  disconnected: number;
  refusedTooLong: number;
  tokens: number;
  /** Requests that ended otherwise than planned, with why. */
  failures: string[];
}

/** Whether an outcome is what its plan calls for: undefined when it is, else why not. */
export function judge(plan: StressPlan, o: StreamOutcome): string | undefined {
  if (plan.tooLong) {
    return o.status === 400 && /context_length_exceeded/.test(o.error ?? "") ? undefined : `expected a context_length_exceeded 400, got ${o.status} ${o.error ?? ""}`;
  }
  if (o.disconnected) return undefined;
  if (!o.ok) return o.error ?? `status ${o.status}`;
  return judgeAnswer(plan, o);
}

function judgeAnswer(plan: StressPlan, o: StreamOutcome): string | undefined {
  if (!o.complete) return "stream ended without finish_reason and [DONE]";
  if (o.tokens > plan.request.maxTokens) return `${o.tokens} tokens for max_tokens ${plan.request.maxTokens}`;
  if (o.finishReason === "length" && o.tokens !== plan.request.maxTokens) return `finish_reason length after ${o.tokens} of ${plan.request.maxTokens} tokens`;
  return undefined;
}

/** `clients` closed-loop clients with random gaps (0-`maxGapMs`) between their requests, for `seconds`. */
export async function runStress(
  client: LoadClient,
  opts: { clients: number; seconds: number; ctxSize: number; maxGen: number; seed: number; maxGapMs?: number },
): Promise<StressReport> {
  const report: StressReport = { clients: opts.clients, seconds: opts.seconds, requests: 0, complete: 0, disconnected: 0, refusedTooLong: 0, tokens: 0, failures: [] };
  const deadline = performance.now() + opts.seconds * 1000;
  await Promise.all(
    Array.from({ length: opts.clients }, async (_, c) => {
      const rnd = prng(opts.seed * 1000 + c);
      while (performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, Math.floor(rnd() * (opts.maxGapMs ?? 50))));
        const plan = stressRequest(rnd, opts.ctxSize, opts.maxGen);
        const o = await client.complete(plan.request, 300_000);
        report.requests++;
        report.tokens += o.tokens;
        const why = judge(plan, o);
        if (why) report.failures.push(`${why} (prompt ${plan.request.prompt.split(" ").length} words, max_tokens ${plan.request.maxTokens})`);
        else if (plan.tooLong) report.refusedTooLong++;
        else if (o.disconnected) report.disconnected++;
        else report.complete++;
      }
    }),
  );
  return report;
}
