/**
 * bench:rag's device mode (bench/rag.ts --model, on the GPU machine: no git history, a random-weight
 * model): what it needs beyond the default mode's TTFT, apart so bench/rag.ts stays readable.
 */
import { execFileSync } from "node:child_process";
import { samples } from "../testing/scale-fleet.ts";

/**
 * A text's tokens as the served model counts them, over the engine's HTTP API: it has no tokenize
 * route, but a completion asking for more tokens than the context holds is refused before anything
 * is computed with the prompt's count in the message ("(N in the prompt, ..."). Less the BOS (what
 * "." counts beyond its one token), as the in-process count leaves it out. Where the engine answers
 * otherwise, characters / 4, said so in `how`.
 */
export async function httpTokenCounter(url: string, log: (line: string) => void): Promise<{ count: (text: string) => Promise<number>; how: string }> {
  const promptTokens = async (prompt: string): Promise<number | undefined> => {
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt, max_tokens: Number.MAX_SAFE_INTEGER, temperature: 0 }),
    });
    const m = /\((\d+) in the prompt,/.exec(await res.text());
    return res.status === 400 && m ? Number(m[1]) : undefined;
  };
  const dot = await promptTokens(".");
  if (dot === undefined) {
    log("the engine did not count a prompt (no context_length_exceeded answer): tokens counted as characters / 4");
    return { count: (text) => Promise.resolve(Math.ceil(text.length / 4)), how: "approximate: characters / 4 (the engine did not count a prompt)" };
  }
  const lead = Math.max(0, dot - 1);
  const seen = new Map<string, number>();
  return {
    count: async (text) => {
      let n = seen.get(text);
      if (n === undefined) seen.set(text, (n = ((await promptTokens(text)) ?? NaN) - lead));
      return n;
    },
    how: "the served model's tokenizer: the engine's prompt count in its context_length_exceeded answer, less the BOS",
  };
}

export function gpuName(): string | undefined {
  try {
    return execFileSync("nvidia-smi", ["--query-gpu=name", "--format=csv,noheader"], { stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim()
      .split("\n")[0];
  } catch {
    return undefined;
  }
}

/** A joining engine's RAG document counters (llmfleet_rag_documents_total by outcome) and cache bytes, from /metrics. */
export async function ragCounts(url: string): Promise<{ cached: number; computed: number; cache_bytes: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const documents = samples(text, "llmfleet_rag_documents_total");
  const outcome = (o: string): number => documents.find(([l]) => l.outcome === o)?.[1] ?? 0;
  return { cached: outcome("cached"), computed: outcome("computed"), cache_bytes: samples(text, "llmfleet_rag_cache_bytes")[0]?.[1] ?? 0 };
}
