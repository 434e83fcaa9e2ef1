/**
 * A generation request as the serving layer takes it: already validated, in the engine's terms.
 * The HTTP layer (engine/http/openai-request.ts) makes one from an OpenAI completion or chat body.
 */
import type { ChatMessage, Sampling } from "../runtime/runtime.ts";

export type RequestKind = "completion" | "chat";

export interface GenerationRequest {
  kind: RequestKind;
  model: string;
  prompt?: string;
  messages?: ChatMessage[];
  /** undefined: as many as fit in the context (chat) */
  maxTokens: number | undefined;
  sampling: Sampling;
  stop: string[];
  stream: boolean;
  /** stream_options.include_usage: a last chunk carries the usage (OpenAI's streamed usage). */
  streamUsage: boolean;
}
