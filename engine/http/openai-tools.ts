/** Validation of `tools`, `tool_choice` and assistant `tool_calls` (OpenAI's function tools). */
import type { ToolCall, ToolChoice, ToolSpec } from "../serving/request.ts";
import { invalidParam } from "./http-error.ts";
import { absent, isObject, notImplemented, onlyKnownKeys, optionalBool, optionalObject, optionalString, type Body } from "./openai-checks.ts";

const NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const TOOL_KEYS = new Set(["type", "function"]);
const FUNCTION_KEYS = new Set(["name", "description", "parameters", "strict"]);

function toolName(obj: Body, path: string): string {
  const name = obj.name;
  if (typeof name !== "string" || !NAME.test(name)) throw invalidParam(path, `'${path}' must be 1 to 64 letters, digits, '_' or '-'`);
  return name;
}

function parseTool(item: unknown, i: number): ToolSpec {
  const path = `tools[${i}]`;
  if (!isObject(item)) throw invalidParam(path, `'${path}' must be an object {type: "function", function: {...}}`);
  onlyKnownKeys(item, TOOL_KEYS, `${path}.`);
  if (item.type !== "function") {
    if (typeof item.type === "string") notImplemented(`${path}.type`, `tools of type '${item.type}' (only 'function' tools)`);
    throw invalidParam(`${path}.type`, `'${path}.type' must be 'function'`);
  }
  const fn = optionalObject(item, "function", `${path}.function`);
  if (!fn) throw invalidParam(`${path}.function`, `'${path}.function' is required`);
  onlyKnownKeys(fn, FUNCTION_KEYS, `${path}.function.`);
  const description = optionalString(fn, "description", `${path}.function.description`);
  const parameters = optionalObject(fn, "parameters", `${path}.function.parameters`);
  optionalBool(fn, "strict", `${path}.function.strict`);
  return {
    name: toolName(fn, `${path}.function.name`),
    ...(description === undefined ? {} : { description }),
    ...(parameters === undefined ? {} : { parameters }),
  };
}

export function parseTools(body: Body): ToolSpec[] | undefined {
  const t = body.tools;
  if (absent(t)) return undefined;
  if (!Array.isArray(t) || t.length > 128) throw invalidParam("tools", "'tools' must be an array of at most 128 tools");
  const tools = t.map(parseTool);
  const names = new Set<string>();
  for (const [i, tool] of tools.entries()) {
    if (names.has(tool.name)) throw invalidParam(`tools[${i}].function.name`, `tool name '${tool.name}' is defined twice`);
    names.add(tool.name);
  }
  return tools;
}

function toolChoiceValue(c: unknown): ToolChoice {
  if (c === "none" || c === "auto" || c === "required") return c;
  if (isObject(c) && c.type === "function" && isObject(c.function)) return { name: toolName(c.function, "tool_choice.function.name") };
  throw invalidParam("tool_choice", `'tool_choice' must be 'none', 'auto', 'required' or {type: "function", function: {name}}`);
}

export function parseToolChoice(body: Body, tools: ToolSpec[] | undefined): ToolChoice | undefined {
  if (absent(body.tool_choice)) return undefined;
  const choice = toolChoiceValue(body.tool_choice);
  if (choice !== "none" && (!tools || tools.length === 0)) throw invalidParam("tool_choice", "'tool_choice' needs 'tools'");
  if (typeof choice === "object" && !tools!.some((t) => t.name === choice.name)) {
    throw invalidParam("tool_choice.function.name", `'tool_choice' names '${choice.name}', which is not in 'tools'`);
  }
  return choice;
}

function parseToolCall(item: unknown, path: string): ToolCall {
  if (!isObject(item) || item.type !== "function" || !isObject(item.function)) {
    throw invalidParam(path, `'${path}' must be {id, type: "function", function: {name, arguments}}`);
  }
  const id = optionalString(item, "id", `${path}.id`, 256);
  if (id === undefined) throw invalidParam(`${path}.id`, `'${path}.id' is required`);
  const args = optionalString(item.function, "arguments", `${path}.function.arguments`) ?? "{}";
  return { id, name: toolName(item.function, `${path}.function.name`), arguments: args };
}

export function parseAssistantToolCalls(v: unknown, path: string): ToolCall[] | undefined {
  if (absent(v)) return undefined;
  if (!Array.isArray(v) || v.length === 0) throw invalidParam(path, `'${path}' must be a non-empty array`);
  return v.map((item, j) => parseToolCall(item, `${path}[${j}]`));
}
