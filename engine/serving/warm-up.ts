/**
 * A prompt of the pod's own, evaluated before it says it is ready. On an H100 a pod's first 8K
 * prompt took 60–95 ms longer than the next ones of the same length (session 26's reuse rows: the
 * first of three repeats on every pod, and the mix's first request on a pod that had only loaded
 * contexts until then, 1.21× recompute): CUDA loads each kernel at its first use and the compute
 * buffers grow to a full batch then. Without a warm-up a user's first request pays that.
 */
import type { ModelRuntime, Token } from "../runtime/runtime.ts";

/** Text the warm-up prompt is cut from (any text does: only the prompt's length matters). */
const TEXT =
  "A fleet of engines serves one model. Each engine holds a cache of the prompts it has seen, and the store behind them keeps what they computed, so that a context is computed once. ";

/**
 * Tokens to warm up with: `setting` as given (0: none, capped at what one sequence holds); auto:
 * with layers on a GPU, two batches (a full batch at position 0, then one attending to it), at
 * most what one sequence holds; on a CPU none (no kernels load lazily there, and a pod's start
 * would wait for a prompt computed on its cores).
 */
export function warmUpTokens(setting: number | "auto", pod: { gpuLayers: number; batchSize: number; contextSize: number }): number {
  const most = Math.max(0, pod.contextSize - 2);
  if (setting !== "auto") return Math.min(setting, most);
  return pod.gpuLayers === 0 ? 0 : Math.min(2 * pod.batchSize, most);
}

/**
 * Evaluates `count` tokens in the runtime's first sequence, decodes two more, and clears the
 * sequence. Returns what it did, or undefined when count is 0.
 */
export async function warmUp(runtime: ModelRuntime, count: number): Promise<{ tokens: number; ms: number } | undefined> {
  const seq = runtime.sequences[0];
  if (count <= 0 || !seq) return undefined;
  const t0 = performance.now();
  const piece = runtime.tokenize(TEXT);
  const tokens: Token[] = [];
  while (tokens.length < count) tokens.push(...piece);
  tokens.length = count;
  await seq.evaluatePrefix(tokens.slice(0, -1));
  const decoding = seq.generate(tokens.slice(-1), { temperature: 0, topP: 1, topK: 0 }, undefined, 2);
  for (let i = 0; i < 2 && !(await decoding.next()).done; i++);
  await decoding.return();
  await seq.evaluatePrefix([]);
  return { tokens: count, ms: performance.now() - t0 };
}
