/**
 * A closed-loop streaming client of an OpenAI-compatible /v1/completions endpoint (the engine, or
 * llama-server as the baseline): C clients each send their requests one after another, streamed,
 * and time every chunk. Tokens are counted from the final chunk's usage when the server sends one
 * (stream_options.include_usage), else one per content chunk (llama-server streams a token a chunk).
 */
import { Agent, request, type IncomingMessage } from "node:http";
import { prng } from "../../engine/model/synthetic-gguf.ts";

export interface CompletionRequest {
  prompt: string;
  maxTokens: number;
  /** Extra body fields (stop, temperature, ...). */
  extra?: Record<string, unknown>;
  /** Abort the stream after this many content chunks (a client that disconnects mid-stream). */
  disconnectAfterChunks?: number;
}

export interface StreamOutcome {
  ok: boolean;
  /** HTTP status, or 0 when the connection failed. */
  status: number;
  tokens: number;
  ttftMs: number;
  /** Milliseconds between successive content chunks. */
  gapsMs: number[];
  finishReason?: string;
  /** The error body or the connection error, when not ok. */
  error?: string;
  /** The client hung up on purpose (disconnectAfterChunks). */
  disconnected: boolean;
  /** The stream ended with [DONE] after a finish_reason. */
  complete: boolean;
}

interface SseState {
  buffer: string;
  tokens: number;
  chunks: number;
  usageTokens?: number;
  finishReason?: string;
  error?: string;
  done: boolean;
}

interface ChunkBody {
  choices?: { text?: string; delta?: { content?: string }; finish_reason?: string | null }[];
  usage?: { completion_tokens?: number };
  error?: { message?: string };
}

/** Applies one SSE data payload; returns whether it carried content. */
function applyEvent(state: SseState, data: string): boolean {
  if (data === "[DONE]") {
    state.done = true;
    return false;
  }
  const body = JSON.parse(data) as ChunkBody;
  if (body.error) state.error = body.error.message ?? data;
  if (body.usage?.completion_tokens !== undefined) state.usageTokens = body.usage.completion_tokens;
  const choice = body.choices?.[0];
  if (!choice) return false;
  if (choice.finish_reason) state.finishReason = choice.finish_reason;
  const content = choiceText(choice).length > 0;
  if (content) state.chunks++;
  return content;
}

const choiceText = (c: NonNullable<ChunkBody["choices"]>[number]): string => c.text ?? c.delta?.content ?? "";

/** Feeds one network chunk; returns how many content events it held. */
function feedSse(state: SseState, text: string): number {
  state.buffer += text;
  let contentEvents = 0;
  for (let end = state.buffer.indexOf("\n\n"); end >= 0; end = state.buffer.indexOf("\n\n")) {
    const event = state.buffer.slice(0, end).trim();
    state.buffer = state.buffer.slice(end + 2);
    if (event.startsWith("data: ") && applyEvent(state, event.slice(6))) contentEvents++;
  }
  return contentEvents;
}

export class LoadClient {
  private readonly agent: Agent;

  constructor(
    private readonly baseUrl: string,
    maxSockets: number,
    private readonly model = "default",
    /**
     * Reuse connections (default). llama-server closes a connection after each streamed answer;
     * a client reusing it then fails every second request with "socket hang up" (half of
     * llama-server's requests in the H200 run of 2026-12-05), so its section connects anew.
     */
    keepAlive = true,
  ) {
    this.agent = new Agent({ keepAlive, maxSockets });
  }

  close(): void {
    this.agent.destroy();
  }

  /** One streamed completion, timed from sending the request. Never throws. */
  complete(req: CompletionRequest, timeoutMs = 600_000): Promise<StreamOutcome> {
    const body = JSON.stringify({
      model: this.model,
      prompt: req.prompt,
      max_tokens: req.maxTokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
      ...req.extra,
    });
    const url = new URL("/v1/completions", this.baseUrl);
    const t0 = performance.now();
    return new Promise<StreamOutcome>((resolve) => {
      const outcome: StreamOutcome = { ok: false, status: 0, tokens: 0, ttftMs: NaN, gapsMs: [], disconnected: false, complete: false };
      const state: SseState = { buffer: "", tokens: 0, chunks: 0, done: false };
      let last = t0;
      let settled = false;
      const finish = (error?: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        outcome.tokens = state.usageTokens ?? state.chunks;
        outcome.finishReason = state.finishReason;
        outcome.complete = state.done && state.finishReason !== undefined && state.error === undefined;
        outcome.error = error ?? state.error;
        outcome.ok = outcome.error === undefined && (outcome.complete || outcome.disconnected);
        resolve(outcome);
      };
      const timer = setTimeout(() => {
        finish(`no answer within ${timeoutMs} ms`);
        req_.destroy();
      }, timeoutMs);
      const req_ = request(
        url,
        { method: "POST", agent: this.agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
        (res: IncomingMessage) => {
          outcome.status = res.statusCode ?? 0;
          res.setEncoding("utf8");
          if (outcome.status !== 200) {
            let text = "";
            res.on("data", (d: string) => (text += d));
            res.on("end", () => finish(`HTTP ${outcome.status}: ${text.slice(0, 300)}`));
            return;
          }
          res.on("data", (d: string) => {
            let events: number;
            try {
              events = feedSse(state, d);
            } catch (err) {
              finish(`bad SSE: ${(err as Error).message}`);
              res.destroy();
              return;
            }
            if (events === 0) return;
            const now = performance.now();
            if (Number.isNaN(outcome.ttftMs)) outcome.ttftMs = now - t0;
            else outcome.gapsMs.push(now - last);
            for (let i = 1; i < events; i++) outcome.gapsMs.push(0);
            last = now;
            if (req.disconnectAfterChunks !== undefined && state.chunks >= req.disconnectAfterChunks) {
              outcome.disconnected = true;
              res.destroy();
              finish();
            }
          });
          res.on("end", () => finish(state.done ? undefined : "stream ended before [DONE]"));
          res.on("error", (err) => finish(outcome.disconnected ? undefined : `stream error: ${err.message}`));
          res.on("close", () => finish(state.done || outcome.disconnected ? undefined : "connection closed before [DONE]"));
        },
      );
      req_.on("error", (err) => finish(outcome.disconnected ? undefined : `request error: ${err.message}`));
      req_.end(body);
    });
  }
}

export interface LoadSummary {
  /** The engine's batching loop over the run (bench/http.ts stepFigures), where the server has one. */
  steps?: Record<string, number>;
  concurrency: number;
  requests: number;
  errors: number;
  tokens: number;
  wall_s: number;
  tok_s: number;
  ttft_p50_ms: number;
  ttft_p90_ms: number;
  itl_p50_ms: number;
  itl_p90_ms: number;
  itl_p99_ms: number;
  /** The first few error messages. */
  error_samples: string[];
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const round = (v: number, digits = 1): number => (Number.isFinite(v) ? Math.round(v * 10 ** digits) / 10 ** digits : v);

export function summarise(concurrency: number, outcomes: readonly StreamOutcome[], wallMs: number): LoadSummary {
  const errors = outcomes.filter((o) => !o.ok);
  const tokens = outcomes.reduce((s, o) => s + o.tokens, 0);
  const gaps = outcomes.flatMap((o) => o.gapsMs);
  const ttfts = outcomes.filter((o) => o.ok).map((o) => o.ttftMs);
  return {
    concurrency,
    requests: outcomes.length,
    errors: errors.length,
    tokens,
    wall_s: round(wallMs / 1000, 2),
    tok_s: round(tokens / (wallMs / 1000)),
    ttft_p50_ms: round(percentile(ttfts, 50)),
    ttft_p90_ms: round(percentile(ttfts, 90)),
    itl_p50_ms: round(percentile(gaps, 50), 2),
    itl_p90_ms: round(percentile(gaps, 90), 2),
    itl_p99_ms: round(percentile(gaps, 99), 2),
    error_samples: [...new Set(errors.map((e) => e.error ?? `status ${e.status}`))].slice(0, 5),
  };
}

/**
 * Closed loop: `concurrency` clients, each sending requests one after another until it has sent
 * `perClient` (or until `untilMs` has passed, when given).
 */
export async function closedLoop(
  send: (req: CompletionRequest) => Promise<StreamOutcome>,
  concurrency: number,
  next: (client: number, index: number) => CompletionRequest,
  limit: { perClient?: number; untilMs?: number },
): Promise<LoadSummary> {
  const outcomes: StreamOutcome[] = [];
  const t0 = performance.now();
  const deadline = limit.untilMs === undefined ? Infinity : t0 + limit.untilMs;
  const perClient = limit.perClient ?? Infinity;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, client) => {
      for (let i = 0; i < perClient && performance.now() < deadline; i++) outcomes.push(await send(next(client, i)));
    }),
  );
  return summarise(concurrency, outcomes, performance.now() - t0);
}

const WORDS = ["the", "of", "and", "is", "to", "in", "capital", "France", "Paris", "hello", "world"];

/** A prompt of `words` words, distinct per seed: common words and the synthetic vocabulary's `w<N>` pieces (one token each there). */
export function benchPrompt(seed: number, words = 100): string {
  const rnd = prng(seed * 7919 + 17);
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(rnd() < 0.5 ? WORDS[Math.floor(rnd() * WORDS.length)]! : `w${Math.floor(rnd() * 2000)}`);
  return out.join(" ");
}

/**
 * Words of benchPrompt per prompt token on the server's model (the synthetic vocabulary splits a
 * word into about two tokens on some presets): ask once, read usage.prompt_tokens.
 */
export async function benchWordsPerToken(url: string): Promise<number> {
  const words = 100; // fits the smallest context a bench sizes
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: benchPrompt(31_337, words), max_tokens: 1, temperature: 0 }),
  });
  const body = (await res.json()) as { usage?: { prompt_tokens?: number } };
  const tokens = body.usage?.prompt_tokens;
  if (!res.ok || !tokens) throw new Error(`calibrating prompt length: HTTP ${res.status}`);
  return words / tokens;
}

/** A benchPrompt of about `tokens` tokens (a little under), given benchWordsPerToken. */
export function benchPromptOfTokens(seed: number, tokens: number, wordsPerToken: number): string {
  return benchPrompt(seed, Math.max(1, Math.floor(tokens * wordsPerToken * 0.97)));
}
