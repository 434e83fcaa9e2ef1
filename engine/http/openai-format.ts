/** OpenAI response bodies for completions and chat completions (whole and streamed chunks). */
import { randomUUID } from "node:crypto";
import type { RequestKind } from "./openai-request.ts";
import type { FinishReason, GenerationResult } from "../serving/completion-service.ts";

export interface ResponseMeta {
  id: string;
  created: number;
  model: string;
  kind: RequestKind;
}

export function newResponseMeta(kind: RequestKind, model: string): ResponseMeta {
  const prefix = kind === "chat" ? "chatcmpl" : "cmpl";
  return { id: `${prefix}-${randomUUID()}`, created: Math.floor(Date.now() / 1000), model, kind };
}

const openAIFinish = (r: FinishReason): "stop" | "length" => (r === "length" ? "length" : "stop");

export function chunkBody(meta: ResponseMeta, delta: string, finish: FinishReason | null): object {
  const finish_reason = finish === null ? null : openAIFinish(finish);
  if (meta.kind === "chat") {
    return {
      id: meta.id,
      object: "chat.completion.chunk",
      created: meta.created,
      model: meta.model,
      choices: [{ index: 0, delta: delta ? { role: "assistant", content: delta } : {}, finish_reason }],
    };
  }
  return { id: meta.id, object: "text_completion", created: meta.created, model: meta.model, choices: [{ index: 0, text: delta, finish_reason }] };
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

export function wholeBody(meta: ResponseMeta, result: GenerationResult): object {
  const usage = usageOf(result);
  const finish_reason = openAIFinish(result.finishReason);
  const choice =
    meta.kind === "chat"
      ? { index: 0, message: { role: "assistant", content: result.text }, finish_reason }
      : { index: 0, text: result.text, finish_reason, logprobs: null };
  return {
    id: meta.id,
    object: meta.kind === "chat" ? "chat.completion" : "text_completion",
    created: meta.created,
    model: meta.model,
    choices: [choice],
    usage,
  };
}
