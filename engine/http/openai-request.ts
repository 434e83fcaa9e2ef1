/** Validation of OpenAI completion and chat requests into one engine-level request. */
import type { ChatMessage, Sampling } from "../runtime/runtime.ts";
import type { GenerationRequest, RequestKind } from "../serving/request.ts";
import { HttpError, invalidParam } from "./http-error.ts";

export type { GenerationRequest, RequestKind };

type Body = Record<string, unknown>;

function optionalNumber(body: Body, key: string, min: number, max: number): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
    throw invalidParam(key, `'${key}' must be a number between ${min} and ${max}`);
  }
  return v;
}

function optionalInt(body: Body, key: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = optionalNumber(body, key, min, max);
  if (v !== undefined && !Number.isInteger(v)) throw invalidParam(key, `'${key}' must be an integer`);
  return v;
}

function parseStop(body: Body): string[] {
  const v = body.stop;
  if (v === undefined || v === null) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.length > 4 || !list.every((s) => typeof s === "string" && s.length > 0)) {
    throw invalidParam("stop", "'stop' must be a non-empty string or an array of at most 4 non-empty strings");
  }
  return list as string[];
}

function parsePrompt(body: Body): string {
  const p = body.prompt;
  if (typeof p === "string") return p;
  if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") return p[0];
  throw invalidParam("prompt", "'prompt' is required and must be a string (or an array of one string)");
}

const ROLES = new Set(["system", "user", "assistant"]);

function parseMessages(body: Body): ChatMessage[] {
  const m = body.messages;
  if (!Array.isArray(m) || m.length === 0) throw invalidParam("messages", "'messages' must be a non-empty array");
  return m.map((item: unknown, i) => {
    const msg = item as Record<string, unknown> | null;
    if (!msg || typeof msg !== "object" || !ROLES.has(msg.role as string) || typeof msg.content !== "string") {
      throw invalidParam(`messages[${i}]`, `messages[${i}] must be {role: system|user|assistant, content: string}`);
    }
    return { role: msg.role as ChatMessage["role"], content: msg.content };
  });
}

function parseSampling(body: Body): Sampling {
  const seed = optionalInt(body, "seed", 0);
  return {
    temperature: optionalNumber(body, "temperature", 0, 2) ?? 1,
    topP: optionalNumber(body, "top_p", 0, 1) ?? 1,
    topK: optionalInt(body, "top_k", 0) ?? 0,
    ...(seed === undefined ? {} : { seed }),
  };
}

function parseModel(body: Body, servedModel: string): string {
  const model = body.model ?? "default";
  if (typeof model !== "string") throw invalidParam("model", "'model' must be a string");
  if (model !== "default" && model !== servedModel) {
    throw new HttpError(404, `The model '${model}' does not exist; this engine serves '${servedModel}' (also named 'default')`, {
      param: "model",
      code: "model_not_found",
    });
  }
  return model;
}

function parseMaxTokens(body: Body, kind: RequestKind): number | undefined {
  const key = kind === "chat" && body.max_completion_tokens !== undefined ? "max_completion_tokens" : "max_tokens";
  return optionalInt(body, key, 1) ?? (kind === "completion" ? 16 : undefined);
}

function parseStreamUsage(body: Body): boolean {
  const o = body.stream_options;
  if (o === undefined || o === null) return false;
  if (typeof o !== "object" || Array.isArray(o)) throw invalidParam("stream_options", "'stream_options' must be an object");
  const include = (o as Body).include_usage;
  if (include !== undefined && typeof include !== "boolean") throw invalidParam("stream_options.include_usage", "'stream_options.include_usage' must be a boolean");
  if (body.stream !== true) throw invalidParam("stream_options", "'stream_options' is only allowed when 'stream' is true");
  return include === true;
}

/** `servedModel` is the model's id; "default" always names it too. */
export function parseOpenAIRequest(raw: unknown, kind: RequestKind, servedModel: string): GenerationRequest {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new HttpError(400, "request body must be a JSON object", { code: "invalid_json" });
  }
  const body = raw as Body;
  const model = parseModel(body, servedModel);
  if (body.stream !== undefined && typeof body.stream !== "boolean") throw invalidParam("stream", "'stream' must be a boolean");
  if (body.n !== undefined && body.n !== 1) throw invalidParam("n", "only n=1 is supported");
  return {
    kind,
    model,
    ...(kind === "chat" ? { messages: parseMessages(body) } : { prompt: parsePrompt(body) }),
    maxTokens: parseMaxTokens(body, kind),
    sampling: parseSampling(body),
    stop: parseStop(body),
    stream: body.stream === true,
    streamUsage: parseStreamUsage(body),
  };
}
