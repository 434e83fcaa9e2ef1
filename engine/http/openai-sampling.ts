/** Sampling parameters of completion and chat bodies: ranges as OpenAI's API documents them. */
import type { Sampling, Token } from "../runtime/runtime.ts";
import type { RequestKind } from "../serving/request.ts";
import { invalidParam } from "./http-error.ts";
import { absent, isObject, optionalBool, optionalInt, optionalNumber, type Body } from "./openai-checks.ts";

/** logit_bias: {"<token id>": bias}, bias in -100..100, at most 1024 entries. */
function parseLogitBias(body: Body): (readonly [Token, number])[] | undefined {
  const v = body.logit_bias;
  if (absent(v)) return undefined;
  if (!isObject(v)) throw invalidParam("logit_bias", "'logit_bias' must be an object mapping token ids to biases");
  const entries = Object.entries(v);
  if (entries.length > 1024) throw invalidParam("logit_bias", "'logit_bias' may name at most 1024 tokens");
  return entries.map(([key, bias]) => {
    if (!/^(0|[1-9]\d{0,9})$/.test(key)) throw invalidParam("logit_bias", `'logit_bias' key '${key.slice(0, 40)}' is not a token id`);
    if (typeof bias !== "number" || !Number.isFinite(bias) || bias < -100 || bias > 100) {
      throw invalidParam(`logit_bias.${key}`, `'logit_bias.${key}' must be a number between -100 and 100`);
    }
    return [Number(key), bias] as const;
  });
}

/**
 * Completions: `logprobs` is how many alternatives per token (0..5). Chat: `logprobs` is a
 * boolean and `top_logprobs` (0..20) how many alternatives, which needs `logprobs: true`.
 */
function parseLogprobs(body: Body, kind: RequestKind): number | undefined {
  if (kind === "completion") return optionalInt(body, "logprobs", [0, 5]);
  const on = optionalBool(body, "logprobs");
  const top = optionalInt(body, "top_logprobs", [0, 20]);
  if (top !== undefined && on !== true) throw invalidParam("top_logprobs", "'top_logprobs' needs 'logprobs: true'");
  return on ? (top ?? 0) : undefined;
}

/** The entries of `o` whose value is not undefined (optional fields stay absent, not undefined). */
function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The native sampler takes a 32-bit seed: a larger (or negative) one is folded into that range. */
const seed32 = (seed: number | undefined): number | undefined =>
  seed === undefined || (seed >= 0 && seed < 2 ** 32) ? seed : Number(BigInt.asUintN(32, BigInt(seed)));

export function parseSampling(body: Body, kind: RequestKind): Sampling {
  const logitBias = parseLogitBias(body);
  return {
    temperature: optionalNumber(body, "temperature", [0, 2]) ?? 1,
    topP: optionalNumber(body, "top_p", [0, 1]) ?? 1,
    topK: optionalInt(body, "top_k", [0, Number.MAX_SAFE_INTEGER]) ?? 0,
    ...defined({
      seed: seed32(optionalInt(body, "seed", [-(2 ** 63), 2 ** 64])),
      // 0 is no penalty: left out, so a request without penalties keeps the fast path.
      presencePenalty: optionalNumber(body, "presence_penalty", [-2, 2]) || undefined,
      frequencyPenalty: optionalNumber(body, "frequency_penalty", [-2, 2]) || undefined,
      logitBias: logitBias && logitBias.length > 0 ? logitBias : undefined,
      logprobs: parseLogprobs(body, kind),
    }),
  };
}
