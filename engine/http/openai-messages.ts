/**
 * Chat messages as the OpenAI SDKs send them, into the engine's messages: `content` as a string
 * or an array of text parts (joined), the `developer` role (rendered as `system`, which it
 * replaces in OpenAI's newer models), `name` (rendered as a `name: ` prefix of the content, since
 * chat templates have no place for it), assistant `tool_calls` and `tool` results (see
 * openai-tools.ts). Parts that are not text (images, audio, files) are refused: the engine serves
 * text models.
 */
import type { RequestMessage } from "../serving/request.ts";
import { invalidParam } from "./http-error.ts";
import { absent, isObject, notImplemented, onlyKnownKeys, optionalString, type Body } from "./openai-checks.ts";
import { parseAssistantToolCalls } from "./openai-tools.ts";

const ROLES = ["system", "developer", "user", "assistant", "tool"] as const;
type Role = (typeof ROLES)[number];

const MESSAGE_KEYS: Record<Role, ReadonlySet<string>> = {
  system: new Set(["role", "content", "name"]),
  developer: new Set(["role", "content", "name"]),
  user: new Set(["role", "content", "name"]),
  assistant: new Set(["role", "content", "name", "tool_calls", "refusal", "audio", "function_call"]),
  tool: new Set(["role", "content", "tool_call_id"]),
};

function textPart(part: unknown, path: string): string {
  if (!isObject(part)) throw invalidParam(path, `'${path}' must be a content part object`);
  if (part.type === "text" || part.type === "input_text") {
    if (typeof part.text !== "string") throw invalidParam(`${path}.text`, `'${path}.text' must be a string`);
    return part.text;
  }
  if (part.type === "refusal" && typeof part.refusal === "string") return part.refusal;
  if (typeof part.type !== "string") throw invalidParam(`${path}.type`, `'${path}.type' must be a string`);
  return notImplemented(`${path}.type`, `content parts of type '${part.type}' (this engine serves text models: only 'text' parts)`);
}

/** A message's text: a string, or text parts joined without a separator (as OpenAI concatenates them). */
function contentText(msg: Body, path: string, optional: boolean): string {
  const c = msg.content;
  if (typeof c === "string") return c;
  if (absent(c) && optional) return "";
  if (Array.isArray(c)) return c.map((part, j) => textPart(part, `${path}.content[${j}]`)).join("");
  throw invalidParam(`${path}.content`, `'${path}.content' must be a string or an array of text parts`);
}

function parseMessage(item: unknown, i: number): RequestMessage {
  const path = `messages[${i}]`;
  if (!isObject(item)) throw invalidParam(path, `'${path}' must be an object with 'role' and 'content'`);
  const role = item.role as Role;
  if (!ROLES.includes(role)) {
    if (item.role === "function") notImplemented(`${path}.role`, "the deprecated 'function' role; use 'tool' messages");
    throw invalidParam(`${path}.role`, `'${path}.role' must be one of ${ROLES.join(", ")}`);
  }
  onlyKnownKeys(item, MESSAGE_KEYS[role], `${path}.`);
  const name = optionalString(item, "name", `${path}.name`, 256);
  if (role === "assistant") return parseAssistant(item, path, name);
  if (role === "tool") {
    const id = optionalString(item, "tool_call_id", `${path}.tool_call_id`, 256);
    if (id === undefined) throw invalidParam(`${path}.tool_call_id`, `'${path}.tool_call_id' is required in a tool message`);
    return { role: "tool", content: contentText(item, path, false), toolCallId: id };
  }
  const content = contentText(item, path, false);
  return { role: role === "developer" ? "system" : role, content: name ? `${name}: ${content}` : content };
}

function parseAssistant(item: Body, path: string, name: string | undefined): RequestMessage {
  if (!absent(item.audio)) notImplemented(`${path}.audio`, "audio output");
  if (!absent(item.function_call)) notImplemented(`${path}.function_call`, "the deprecated function_call; use tool_calls");
  optionalString(item, "refusal", `${path}.refusal`);
  const toolCalls = parseAssistantToolCalls(item.tool_calls, `${path}.tool_calls`);
  const text = contentText(item, path, toolCalls !== undefined);
  const content = name && text ? `${name}: ${text}` : text;
  return toolCalls ? { role: "assistant", content, toolCalls } : { role: "assistant", content };
}

export function parseMessages(body: Body): RequestMessage[] {
  const m = body.messages;
  if (!Array.isArray(m) || m.length === 0) throw invalidParam("messages", "'messages' must be a non-empty array");
  return m.map(parseMessage);
}
