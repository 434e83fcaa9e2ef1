/**
 * Validation of OpenAI completion and chat requests into one engine-level request, done once at
 * the front (the router, and every engine role for requests that reach it directly): every
 * parameter's type and range, 400 naming `param` otherwise. A parameter that would change the
 * output and that no engine here implements is refused (400, code `unsupported_parameter`);
 * parameters that only label a request are accepted (LABELS); an unknown parameter is refused as
 * OpenAI refuses it; extension fields of this project (EXTENSIONS) pass through to the engine.
 * What one runtime cannot do (the llama backend: logprobs, grammars...) is refused by the engine
 * that runs it (checkRuntimeFeatures), since the router does not know the pods' backend.
 */
import type { ModelRuntime, RuntimeFeatures, RuntimeInfo, Sampling } from "../runtime/runtime.ts";
import { JSON_OBJECT_GRAMMAR, jsonSchemaGrammar, SchemaError } from "../serving/json-grammar.ts";
import type { GenerationRequest, RequestKind, ResponseFormat, ToolChoice, ToolSpec } from "../serving/request.ts";
import { toolCallGrammar } from "../serving/tool-calls.ts";
import { HttpError, invalidParam } from "./http-error.ts";
import { absent, isObject, notImplemented, onlyKnownKeys, optionalBool, optionalEnum, optionalInt, optionalObject, optionalString, type Body } from "./openai-checks.ts";
import { parseMessages } from "./openai-messages.ts";
import { parseSampling } from "./openai-sampling.ts";
import { parseToolChoice, parseTools } from "./openai-tools.ts";

export type { GenerationRequest, RequestKind };

/** Parameters that label a request and change nothing in its output: accepted, checked for type, not used. */
export const LABELS = ["user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier"] as const;
/** Extension fields other features of this project define, sent by clients through extra_body; passed through as sent. */
export const EXTENSIONS = ["documents"] as const;

const MAX_INT = Number.MAX_SAFE_INTEGER;
const COMMON = ["model", "stream", "stream_options", "max_tokens", "n", "temperature", "top_p", "top_k", "seed", "stop"];
const SAMPLING = ["presence_penalty", "frequency_penalty", "logit_bias", "logprobs"];
/** Refused when set: they change the output and nothing here implements them (see docs/api.md). */
const UNSUPPORTED_CHAT: Record<string, string> = {
  audio: "audio output (the engine serves text models)",
  modalities: "output modalities other than ['text']",
  prediction: "predicted outputs",
  reasoning_effort: "reasoning effort (the served models do not reason)",
  verbosity: "verbosity",
  web_search_options: "web search",
  functions: "the deprecated 'functions'; use 'tools'",
  function_call: "the deprecated 'function_call'; use 'tool_choice'",
};
const KNOWN: Record<RequestKind, ReadonlySet<string>> = {
  completion: new Set([...COMMON, ...SAMPLING, ...LABELS, ...EXTENSIONS, "prompt", "echo", "best_of", "suffix"]),
  chat: new Set([
    ...COMMON,
    ...SAMPLING,
    ...LABELS,
    ...EXTENSIONS,
    ...Object.keys(UNSUPPORTED_CHAT),
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
  ]),
};

function parseStop(body: Body): string[] {
  const v = body.stop;
  if (absent(v)) return [];
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
  if (Array.isArray(p) && p.length > 1) notImplemented("prompt", "more than one prompt per request (send one request per prompt)");
  if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === "number" || Array.isArray(x))) notImplemented("prompt", "prompts as token ids");
  throw invalidParam("prompt", "'prompt' is required and must be a string (or an array of one string)");
}

function parseModel(body: Body): string {
  const model = body.model ?? "default";
  if (typeof model !== "string" || model.length === 0) throw invalidParam("model", "'model' must be a non-empty string");
  return model;
}

function parseMaxTokens(body: Body, kind: RequestKind): number | undefined {
  const max = optionalInt(body, "max_tokens", [1, MAX_INT]);
  const completion = kind === "chat" ? optionalInt(body, "max_completion_tokens", [1, MAX_INT]) : undefined;
  return completion ?? max ?? (kind === "completion" ? 16 : undefined);
}

function parseStreamUsage(body: Body): boolean {
  const o = optionalObject(body, "stream_options");
  if (!o) return false;
  onlyKnownKeys(o, new Set(["include_usage", "include_obfuscation"]), "stream_options.");
  const include = optionalBool(o, "include_usage", "stream_options.include_usage");
  optionalBool(o, "include_obfuscation", "stream_options.include_obfuscation");
  if (body.stream !== true) throw invalidParam("stream_options", "'stream_options' is only allowed when 'stream' is true");
  return include === true;
}

function checkLabels(body: Body): void {
  optionalString(body, "user", "user", 512);
  optionalString(body, "prompt_cache_key", "prompt_cache_key", 1024);
  optionalString(body, "safety_identifier", "safety_identifier", 512);
  optionalBool(body, "store");
  optionalBool(body, "parallel_tool_calls");
  optionalEnum(body, "service_tier", ["auto", "default", "flex", "scale", "priority"]);
  const metadata = optionalObject(body, "metadata");
  if (metadata && (Object.keys(metadata).length > 16 || Object.values(metadata).some((v) => typeof v !== "string" || v.length > 512))) {
    throw invalidParam("metadata", "'metadata' must map at most 16 keys to strings of at most 512 characters");
  }
}

function checkUnsupported(body: Body, kind: RequestKind): void {
  const n = optionalInt(body, "n", [1, 128]);
  if (n !== undefined && n !== 1) notImplemented("n", "only n=1 (send n requests; each is one sequence)");
  if (kind === "completion") checkUnsupportedCompletion(body);
  else checkUnsupportedChat(body);
}

function checkUnsupportedCompletion(body: Body): void {
  const bestOf = optionalInt(body, "best_of", [1, 20]);
  if (bestOf !== undefined && bestOf !== 1) notImplemented("best_of", "only best_of=1");
  const suffix = optionalString(body, "suffix");
  if (suffix) notImplemented("suffix", "text insertion (a suffix after the completion)");
}

function checkUnsupportedChat(body: Body): void {
  for (const [key, what] of Object.entries(UNSUPPORTED_CHAT)) {
    if (absent(body[key])) continue;
    if (key === "modalities" && Array.isArray(body.modalities) && body.modalities.every((m) => m === "text")) continue;
    notImplemented(key, what);
  }
}

function parseResponseFormat(body: Body): ResponseFormat | undefined {
  const f = optionalObject(body, "response_format");
  if (!f) return undefined;
  const type = optionalEnum(f, "type", ["text", "json_object", "json_schema"], "response_format.type");
  if (type === undefined) throw invalidParam("response_format.type", "'response_format.type' is required");
  if (type !== "json_schema") {
    onlyKnownKeys(f, new Set(["type"]), "response_format.");
    return { type };
  }
  onlyKnownKeys(f, new Set(["type", "json_schema"]), "response_format.");
  const js = optionalObject(f, "json_schema", "response_format.json_schema");
  if (!js) throw invalidParam("response_format.json_schema", "'response_format.json_schema' is required with type 'json_schema'");
  onlyKnownKeys(js, new Set(["name", "description", "schema", "strict"]), "response_format.json_schema.");
  const name = optionalString(js, "name", "response_format.json_schema.name", 64);
  if (name === undefined || !/^[a-zA-Z0-9_-]+$/.test(name)) {
    throw invalidParam("response_format.json_schema.name", "'response_format.json_schema.name' is required: letters, digits, '_' or '-', at most 64");
  }
  optionalString(js, "description", "response_format.json_schema.description");
  optionalBool(js, "strict", "response_format.json_schema.strict");
  return { type, name, schema: optionalObject(js, "schema", "response_format.json_schema.schema") ?? {} };
}

/** The grammar that constrains the output: a JSON response format, or tool calls that must be made. */
function formatGrammar(format: ResponseFormat | undefined): string | undefined {
  if (format?.type === "json_object") return JSON_OBJECT_GRAMMAR;
  if (format?.type !== "json_schema") return undefined;
  try {
    return jsonSchemaGrammar(format.schema);
  } catch (err) {
    if (err instanceof SchemaError) throw invalidParam(`response_format.json_schema.${err.path}`, err.message, "unsupported_schema");
    throw err;
  }
}

function callGrammar(tools: ToolSpec[], choice: ToolChoice): string {
  try {
    return toolCallGrammar(tools, choice);
  } catch (err) {
    if (err instanceof SchemaError) throw invalidParam(err.path, err.message, "unsupported_schema");
    throw err;
  }
}

function outputGrammar(req: Pick<GenerationRequest, "responseFormat" | "tools" | "toolChoice">): string | undefined {
  const { responseFormat: format, tools, toolChoice: choice } = req;
  if (!tools || !choice || choice === "none" || choice === "auto") return formatGrammar(format);
  if (format) throw invalidParam("response_format", "'response_format' JSON cannot be combined with a required tool call");
  return callGrammar(tools, choice);
}

function chatFields(body: Body): Partial<GenerationRequest> {
  const messages = parseMessages(body);
  const tools = parseTools(body);
  const toolChoice = parseToolChoice(body, tools);
  const responseFormat = parseResponseFormat(body);
  return {
    messages,
    ...(tools ? { tools } : {}),
    ...(toolChoice ? { toolChoice } : {}),
    ...(responseFormat && responseFormat.type !== "text" ? { responseFormat } : {}),
  };
}

function completionFields(body: Body, sampling: Sampling): Partial<GenerationRequest> {
  const echo = optionalBool(body, "echo") ?? false;
  if (echo && sampling.logprobs !== undefined) notImplemented("echo", "echo together with logprobs (the prompt's log-probabilities)");
  return { prompt: parsePrompt(body), ...(echo ? { echo } : {}) };
}

/** The most documents one request may carry. */
export const MAX_DOCUMENTS = 64;

/**
 * `documents` (this project's RAG extension): an array of strings or `{text}` objects, each
 * non-empty; the engine gets their texts (docs/api.md says where they go in the prompt).
 */
export function documentTexts(raw: unknown): string[] {
  if (!Array.isArray(raw)) throw invalidParam("documents", "'documents' must be an array of strings or {text} objects");
  if (raw.length > MAX_DOCUMENTS) throw invalidParam("documents", `'documents' holds ${raw.length} items; at most ${MAX_DOCUMENTS}`);
  return raw.map((d: unknown, i) => {
    const text = typeof d === "string" ? d : d !== null && typeof d === "object" && !Array.isArray(d) ? (d as { text?: unknown }).text : undefined;
    if (typeof text !== "string" || text.length === 0) throw invalidParam(`documents[${i}]`, `'documents[${i}]' must be a non-empty string or an object with a non-empty 'text'`);
    return text;
  });
}

function extensionsOf(body: Body): Record<string, unknown> | undefined {
  const present = EXTENSIONS.filter((k) => !absent(body[k]));
  if (present.length === 0) return undefined;
  return Object.fromEntries(present.map((k) => [k, k === "documents" ? documentTexts(body[k]) : body[k]]));
}

/**
 * The request validated in full, in the engine's terms; `model` as sent (or "default"), not yet
 * checked against a served model (the router does not know it).
 */
export function validateOpenAIRequest(raw: unknown, kind: RequestKind): GenerationRequest {
  if (!isObject(raw)) throw new HttpError(400, "request body must be a JSON object", { code: "invalid_json" });
  const body = raw;
  onlyKnownKeys(body, KNOWN[kind]);
  const model = parseModel(body);
  const stream = optionalBool(body, "stream") ?? false;
  checkLabels(body);
  checkUnsupported(body, kind);
  const sampling = parseSampling(body, kind);
  const fields = kind === "chat" ? chatFields(body) : completionFields(body, sampling);
  const grammar = outputGrammar(fields);
  const extensions = extensionsOf(body);
  return {
    kind,
    model,
    ...fields,
    maxTokens: parseMaxTokens(body, kind),
    sampling: grammar ? { ...sampling, grammar } : sampling,
    stop: parseStop(body),
    stream,
    streamUsage: parseStreamUsage(body),
    ...(extensions ? { extensions } : {}),
  };
}

/** The engine's refusal of what its runtime cannot do, naming the parameter. */
/** [the runtime feature, whether the request uses it, the parameter to name] */
function featureUses(req: GenerationRequest): [keyof RuntimeFeatures, boolean, string][] {
  const s = req.sampling;
  return [
    ["logprobs", s.logprobs !== undefined, "logprobs"],
    ["penalties", Boolean(s.presencePenalty), "presence_penalty"],
    ["penalties", Boolean(s.frequencyPenalty), "frequency_penalty"],
    ["logitBias", s.logitBias !== undefined, "logit_bias"],
    ["grammar", s.grammar !== undefined, req.responseFormat ? "response_format" : "tool_choice"],
  ];
}

export function checkRuntimeFeatures(req: GenerationRequest, features: RuntimeFeatures): void {
  for (const [feature, used, param] of featureUses(req)) {
    if (used && !features[feature]) notImplemented(param, `it is not available with the ${features.backend} backend (use --backend native)`);
  }
  const s = req.sampling;
  const outside = s.logitBias?.find(([token]) => token >= features.vocabSize);
  if (outside) throw invalidParam("logit_bias", `'logit_bias' names token ${outside[0]}; the vocabulary has ${features.vocabSize} tokens`);
}

/** What names a pod's model: its id (the GGUF file's) and, with --served-model-name, the name it is served as. */
export type ModelNaming = Pick<RuntimeInfo, "modelId" | "servedName">;

/** The names a pod's model answers to in the API: its served name (if any), its id, "default". */
export const modelNames = (info: ModelNaming): string[] => [...(info.servedName ? [info.servedName] : []), info.modelId, "default"];

/** The 404 for a model by a name that `server` (an engine, or a router's fleet) does not serve; `served` is the name it lists first. */
export const modelNotFound = (id: string, served: string, server = "engine"): HttpError =>
  new HttpError(404, `The model '${id}' does not exist; this ${server} serves '${served}' (also named 'default')`, { param: "model", code: "model_not_found" });

/** A request for the model `info` names (by any of modelNames), validated. */
export function parseOpenAIRequest(raw: unknown, kind: RequestKind, info: ModelNaming): GenerationRequest {
  const req = validateOpenAIRequest(raw, kind);
  if (!modelNames(info).includes(req.model)) throw modelNotFound(req.model, info.servedName ?? info.modelId);
  return req;
}

/** An engine pod's parse: validation, the served model, and what its runtime can do. */
export function parseEngineRequest(raw: unknown, kind: RequestKind, runtime: ModelRuntime): GenerationRequest {
  const req = parseOpenAIRequest(raw, kind, runtime.info);
  checkRuntimeFeatures(req, runtime.features);
  return req;
}
