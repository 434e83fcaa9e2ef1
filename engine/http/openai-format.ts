/** OpenAI response bodies for completions and chat completions (whole and streamed chunks). */
import { randomUUID } from "node:crypto";
import type { GenerationRequest, RequestKind } from "./openai-request.ts";
import type { Delta, FinishReason, GenerationResult, LogprobEntry } from "../serving/completion-service.ts";
import type { ToolSpec } from "../serving/request.ts";
import { parseToolOutput, type ParsedToolOutput } from "../serving/tool-calls.ts";

export interface ResponseMeta {
  id: string;
  created: number;
  model: string;
  kind: RequestKind;
  /** Tools the model may call in this answer (tool_choice other than none): its text is parsed for calls. */
  tools?: ToolSpec[];
  /** Completions with logprobs: characters of the text sent so far (text_offset). */
  textOffset: number;
  /** A streamed chat answer: the role was sent (in its first delta only, as OpenAI does). */
  roleSent?: boolean;
}

/** A chat stream's delta: the role in the first one that carries anything, then only what is new. */
function chatDelta(meta: ResponseMeta, fields: Record<string, unknown>): Record<string, unknown> {
  if (meta.roleSent) return fields;
  meta.roleSent = true;
  return { role: "assistant", ...fields };
}

export function newResponseMeta(req: GenerationRequest): ResponseMeta {
  const prefix = req.kind === "chat" ? "chatcmpl" : "cmpl";
  const tools = req.tools && req.tools.length > 0 && req.toolChoice !== "none" ? req.tools : undefined;
  return { id: `${prefix}-${randomUUID()}`, created: Math.floor(Date.now() / 1000), model: req.model, kind: req.kind, textOffset: 0, ...(tools ? { tools } : {}) };
}

type OpenAIFinish = "stop" | "length" | "tool_calls";
const openAIFinish = (r: FinishReason): OpenAIFinish => (r === "length" ? "length" : "stop");

/** Chat: {content: [{token, logprob, bytes, top_logprobs}]}. */
function chatLogprobs(entries: LogprobEntry[]): object {
  return { content: entries.map((e) => ({ token: e.token, logprob: e.logprob, bytes: e.bytes, top_logprobs: e.top })), refusal: null };
}

/** Completions: {tokens, token_logprobs, top_logprobs, text_offset}; offsets continue from meta.textOffset. */
function completionLogprobs(meta: ResponseMeta, entries: LogprobEntry[]): object {
  const text_offset = entries.map((e) => {
    const at = meta.textOffset;
    meta.textOffset += e.token.length;
    return at;
  });
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((t) => [t.token, t.logprob]))),
    text_offset,
  };
}

function logprobsOf(meta: ResponseMeta, entries: LogprobEntry[] | undefined): object | null {
  if (!entries) return null;
  return meta.kind === "chat" ? chatLogprobs(entries) : completionLogprobs(meta, entries);
}

export function chunkBody(meta: ResponseMeta, delta: Delta, finish: FinishReason | OpenAIFinish | null): object {
  const finish_reason = finish === null || finish === "tool_calls" ? finish : openAIFinish(finish);
  const logprobs = logprobsOf(meta, delta.logprobs);
  if (meta.kind === "chat") {
    return {
      id: meta.id,
      object: "chat.completion.chunk",
      created: meta.created,
      model: meta.model,
      choices: [{ index: 0, delta: delta.text ? chatDelta(meta, { content: delta.text }) : {}, logprobs, finish_reason }],
    };
  }
  return { id: meta.id, object: "text_completion", created: meta.created, model: meta.model, choices: [{ index: 0, text: delta.text, logprobs, finish_reason }] };
}

function toolCallsJson(parsed: ParsedToolOutput): object[] {
  return parsed.calls.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } }));
}

const newCallId = (): string => `call_${randomUUID().replace(/-/g, "").slice(0, 24)}`;

/**
 * A streamed answer that may call tools is held back and sent whole at its end (its text is
 * only known to be a call once complete): a content chunk, a chunk with every tool call, then
 * the finish.
 */
export function toolStreamChunks(meta: ResponseMeta, result: GenerationResult): object[] {
  const parsed = parseToolOutput(result.text, meta.tools ?? [], newCallId);
  const base = { id: meta.id, object: "chat.completion.chunk", created: meta.created, model: meta.model };
  const chunks: object[] = [];
  if (parsed.content) chunks.push({ ...base, choices: [{ index: 0, delta: chatDelta(meta, { content: parsed.content }), logprobs: null, finish_reason: null }] });
  if (parsed.calls.length > 0) {
    const tool_calls = toolCallsJson(parsed).map((c, index) => ({ index, ...c }));
    chunks.push({ ...base, choices: [{ index: 0, delta: chatDelta(meta, { tool_calls }), logprobs: null, finish_reason: null }] });
  }
  const finish = parsed.calls.length > 0 ? "tool_calls" : openAIFinish(result.finishReason);
  chunks.push({ ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: finish }] });
  return chunks;
}

function usageOf(result: GenerationResult): object {
  return {
    prompt_tokens: result.promptTokens,
    completion_tokens: result.completionTokens,
    total_tokens: result.promptTokens + result.completionTokens,
    prompt_tokens_details: { cached_tokens: result.prefixHitTokens },
  };
}

/** The last chunk of a stream asked for with stream_options.include_usage: no choices, the usage. */
export function usageChunkBody(meta: ResponseMeta, result: GenerationResult): object {
  const object = meta.kind === "chat" ? "chat.completion.chunk" : "text_completion";
  return { id: meta.id, object, created: meta.created, model: meta.model, choices: [], usage: usageOf(result) };
}

function chatChoice(meta: ResponseMeta, result: GenerationResult): object {
  const logprobs = logprobsOf(meta, result.logprobs);
  if (meta.tools) {
    const parsed = parseToolOutput(result.text, meta.tools, newCallId);
    if (parsed.calls.length > 0) {
      return { index: 0, message: { role: "assistant", content: parsed.content, tool_calls: toolCallsJson(parsed), refusal: null }, logprobs, finish_reason: "tool_calls" };
    }
  }
  return { index: 0, message: { role: "assistant", content: result.text, refusal: null }, logprobs, finish_reason: openAIFinish(result.finishReason) };
}

export function wholeBody(meta: ResponseMeta, result: GenerationResult): object {
  const choice =
    meta.kind === "chat"
      ? chatChoice(meta, result)
      : { index: 0, text: result.text, finish_reason: openAIFinish(result.finishReason), logprobs: logprobsOf(meta, result.logprobs) };
  return {
    id: meta.id,
    object: meta.kind === "chat" ? "chat.completion" : "text_completion",
    created: meta.created,
    model: meta.model,
    choices: [choice],
    usage: usageOf(result),
  };
}
