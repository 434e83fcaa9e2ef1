/**
 * A generation request as the serving layer takes it: already validated, in the engine's terms.
 * The HTTP layer (engine/http/openai-request.ts) makes one from an OpenAI completion or chat body.
 */
import type { Sampling } from "../runtime/runtime.ts";

export type RequestKind = "completion" | "chat";

/** A call of a tool the model made (an assistant message's tool_calls[i]). */
export interface ToolCall {
  id: string;
  name: string;
  /** The arguments as a JSON text (OpenAI's `function.arguments`). */
  arguments: string;
}

/** A chat message as the client sent it, with `developer` already as `system` and `name` rendered. */
export interface RequestMessage {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
  /** assistant: the tool calls it made. */
  toolCalls?: ToolCall[];
  /** tool: the call this message answers. */
  toolCallId?: string;
}

export interface ToolSpec {
  name: string;
  description?: string;
  /** JSON schema of the arguments object; default any object. */
  parameters?: Record<string, unknown>;
}

/** none: answer in text; auto: text or calls; required: at least one call; a name: a call of that tool. */
export type ToolChoice = "none" | "auto" | "required" | { name: string };

export type ResponseFormat = { type: "text" } | { type: "json_object" } | { type: "json_schema"; name: string; schema: Record<string, unknown> };

export interface GenerationRequest {
  kind: RequestKind;
  model: string;
  prompt?: string;
  messages?: RequestMessage[];
  /** undefined: as many as fit in the context (chat) */
  maxTokens: number | undefined;
  sampling: Sampling;
  stop: string[];
  stream: boolean;
  /** stream_options.include_usage: a last chunk carries the usage (OpenAI's streamed usage). */
  streamUsage: boolean;
  /** completions: the prompt is returned before the completion. Default false. */
  echo?: boolean;
  /** chat: response_format; default text. */
  responseFormat?: ResponseFormat;
  /** chat: tools the model may call, and whether and which it must. */
  tools?: ToolSpec[];
  toolChoice?: ToolChoice;
  /** Extension fields other features of the project define (e.g. `documents`), passed through as sent. */
  extensions?: Record<string, unknown>;
}
