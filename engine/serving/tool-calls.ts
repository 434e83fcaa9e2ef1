/**
 * Tool calling in a generic format, for chat templates that have no tool section (the default
 * model's, Gemma 3's, has none). The tools are described in a system message; the model calls a
 * tool by writing
 *
 *     <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>
 *
 * (one block per call), and gets each result back as a user turn
 *
 *     <tool_response id="call_1">{"temp": 21}</tool_response>
 *
 * The same format renders earlier assistant `tool_calls` into the transcript, and parses the
 * model's text back into `tool_calls`. With `tool_choice: required` or a named function the
 * output is constrained by a grammar to one or more such blocks whose arguments validate against
 * the tool's `parameters` schema; with `auto` the model chooses, and text that holds well-formed
 * blocks naming known tools becomes tool calls.
 */
import type { ChatMessage } from "../runtime/runtime.ts";
import { GrammarBuilder, gbnfLiteral } from "./json-grammar.ts";
import type { RequestMessage, ToolCall, ToolChoice, ToolSpec } from "./request.ts";

const OPEN = "<tool_call>";
const CLOSE = "</tool_call>";

function toolList(tools: readonly ToolSpec[]): string {
  return tools
    .map((t) => JSON.stringify({ name: t.name, ...(t.description ? { description: t.description } : {}), parameters: t.parameters ?? { type: "object" } }))
    .join("\n");
}

/** The system text that tells the model which tools it has and how to call them. */
export function toolInstructions(tools: readonly ToolSpec[], choice: ToolChoice): string {
  const must =
    choice === "required" ? "You must call at least one tool." : typeof choice === "object" ? `You must call the tool ${choice.name}.` : "Call a tool only when it helps.";
  return [
    "You can call these tools (JSON schemas of their arguments):",
    toolList(tools),
    `To call a tool, write ${OPEN}{"name": <tool name>, "arguments": <arguments object>}${CLOSE}, one block per call. ${must}`,
    'Each result comes back as <tool_response id="...">result</tool_response>.',
  ].join("\n");
}

const callText = (c: ToolCall): string => `${OPEN}{"name": ${JSON.stringify(c.name)}, "arguments": ${c.arguments}}${CLOSE}`;

/** The messages a plain chat template renders: tools in a system message, calls and results as text. */
export function renderToolMessages(messages: readonly RequestMessage[], tools: readonly ToolSpec[] | undefined, choice: ToolChoice | undefined): ChatMessage[] {
  const out: ChatMessage[] = messages.map((m) => {
    if (m.role === "tool") return { role: "user", content: `<tool_response id=${JSON.stringify(m.toolCallId ?? "")}>${m.content}</tool_response>` };
    if (m.role === "assistant" && m.toolCalls) return { role: "assistant", content: [m.content, ...m.toolCalls.map(callText)].filter(Boolean).join("\n") };
    return { role: m.role as ChatMessage["role"], content: m.content };
  });
  if (!tools || tools.length === 0 || choice === "none") return out;
  const instructions = toolInstructions(tools, choice ?? "auto");
  if (out[0]?.role === "system") out[0] = { role: "system", content: `${out[0].content}\n\n${instructions}` };
  else out.unshift({ role: "system", content: instructions });
  return out;
}

/** A grammar for one or more tool-call blocks (tool_choice required: any tool; named: that one). */
export function toolCallGrammar(tools: readonly ToolSpec[], choice: ToolChoice): string {
  const chosen = typeof choice === "object" ? tools.filter((t) => t.name === choice.name) : tools;
  const b = new GrammarBuilder();
  const alts = chosen.map((t, i) => {
    const schema = t.parameters ?? { type: "object" };
    const args = b.valueIn(schema, schema, `tools[${i}].function.parameters`, `t${i}-`);
    return `${gbnfLiteral(`${OPEN}{"name": ${JSON.stringify(t.name)}, "arguments": `)} ${args} ${gbnfLiteral(`}${CLOSE}`)}`;
  });
  const call = b.rule("call", alts.map((a) => `( ${a} )`).join(" | "));
  return b.grammar(`${call} ( "\\n" ${call} )*`);
}

export interface ParsedToolOutput {
  content: string | null;
  calls: ToolCall[];
}

/** The model's text split into text and tool calls; blocks that do not parse or name an unknown tool stay text. */
export function parseToolOutput(text: string, tools: readonly ToolSpec[], newId: () => string): ParsedToolOutput {
  const calls: ToolCall[] = [];
  let rest = "";
  let at = 0;
  for (;;) {
    const open = text.indexOf(OPEN, at);
    const close = open < 0 ? -1 : text.indexOf(CLOSE, open);
    if (close < 0) break;
    const call = parseBlock(text.slice(open + OPEN.length, close), tools, newId);
    rest += text.slice(at, open) + (call ? "" : text.slice(open, close + CLOSE.length));
    if (call) calls.push(call);
    at = close + CLOSE.length;
  }
  rest += text.slice(at);
  const content = rest.trim();
  return { content: calls.length > 0 && content === "" ? null : calls.length > 0 ? content : text, calls };
}

function parseBlock(json: string, tools: readonly ToolSpec[], newId: () => string): ToolCall | undefined {
  try {
    const v = JSON.parse(json) as { name?: unknown; arguments?: unknown };
    if (typeof v.name !== "string" || !tools.some((t) => t.name === v.name)) return undefined;
    const args = typeof v.arguments === "string" ? v.arguments : JSON.stringify(v.arguments ?? {});
    return { id: newId(), name: v.name, arguments: args };
  } catch {
    return undefined;
  }
}
