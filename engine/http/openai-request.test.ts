/** Standalone, no model: OpenAI completion and chat bodies into GenerationRequests, or the 4xx that names the field. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { HttpError } from "./http-error.ts";
import { parseOpenAIRequest } from "./openai-request.ts";
import type { GenerationRequest, RequestKind } from "../serving/request.ts";

const SERVED = "gemma-270m";

test("valid bodies become engine requests with OpenAI's defaults", () => {
  const rows: [RequestKind, Record<string, unknown>, Record<string, unknown>][] = [
    ["completion", { prompt: "hi" }, { prompt: "hi", maxTokens: 16, stream: false, streamUsage: false, stop: [], model: "default" }],
    ["completion", { prompt: ["hi"], model: SERVED, max_tokens: 3, stop: "x" }, { prompt: "hi", maxTokens: 3, stop: ["x"], model: SERVED }],
    ["completion", { prompt: "hi", stream: true, stream_options: { include_usage: true } }, { stream: true, streamUsage: true }],
    ["chat", { messages: [{ role: "user", content: "hi" }] }, { maxTokens: undefined, messages: [{ role: "user", content: "hi" }] }],
    ["chat", { messages: [{ role: "system", content: "s" }], max_completion_tokens: 9, max_tokens: 2 }, { maxTokens: 9 }],
    ["completion", { prompt: "hi", temperature: 0, top_p: 0.5, top_k: 4, seed: 7 }, { sampling: { temperature: 0, topP: 0.5, topK: 4, seed: 7 } }],
    ["completion", { prompt: "hi" }, { sampling: { temperature: 1, topP: 1, topK: 0 } }],
  ];
  for (const [kind, body, expected] of rows) {
    const parsed = parseOpenAIRequest(body, kind, { modelId: SERVED }) as unknown as Record<string, unknown>;
    assert.equal(parsed.kind, kind);
    for (const [key, value] of Object.entries(expected)) assert.deepEqual(parsed[key], value, `${JSON.stringify(body)}: ${key}`);
  }
});

test("invalid bodies are 4xx naming the field", () => {
  const rows: [RequestKind, unknown, number, string | null][] = [
    ["completion", null, 400, null],
    ["completion", [1], 400, null],
    ["completion", {}, 400, "prompt"],
    ["completion", { prompt: 3 }, 400, "prompt"],
    ["completion", { prompt: ["a", "b"] }, 400, "prompt"],
    ["completion", { prompt: "x", model: "other" }, 404, "model"],
    ["completion", { prompt: "x", model: 5 }, 400, "model"],
    ["completion", { prompt: "x", temperature: 3 }, 400, "temperature"],
    ["completion", { prompt: "x", top_p: -1 }, 400, "top_p"],
    ["completion", { prompt: "x", top_k: 1.5 }, 400, "top_k"],
    ["completion", { prompt: "x", max_tokens: 0 }, 400, "max_tokens"],
    ["completion", { prompt: "x", stop: ["a", "b", "c", "d", "e"] }, 400, "stop"],
    ["completion", { prompt: "x", stop: [""] }, 400, "stop"],
    ["completion", { prompt: "x", stream: "yes" }, 400, "stream"],
    ["completion", { prompt: "x", n: 2 }, 400, "n"],
    ["completion", { prompt: "x", stream_options: { include_usage: true } }, 400, "stream_options"],
    ["completion", { prompt: "x", stream: true, stream_options: { include_usage: "y" } }, 400, "stream_options.include_usage"],
    ["chat", { messages: [] }, 400, "messages"],
    ["chat", { messages: [{ role: "wizard", content: "x" }] }, 400, "messages[0].role"],
    ["chat", { messages: [{ role: "user", content: "x" }, { role: "user" }] }, 400, "messages[1].content"],
    ["chat", { messages: ["hi"] }, 400, "messages[0]"],
    ["chat", { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] }, 400, "messages[0].content[0].type"],
    ["chat", { messages: [{ role: "user", content: [{ type: "text", text: 5 }] }] }, 400, "messages[0].content[0].text"],
    ["chat", { messages: [{ role: "user", content: "x", name: 3 }] }, 400, "messages[0].name"],
    ["chat", { messages: [{ role: "user", content: "x", wat: 1 }] }, 400, "messages[0].wat"],
    ["chat", { messages: [{ role: "tool", content: "x" }] }, 400, "messages[0].tool_call_id"],
    ["chat", { messages: [{ role: "function", content: "x", name: "f" }] }, 400, "messages[0].role"],
    ["completion", { prompt: "x", logprobs: "x" }, 400, "logprobs"],
    ["completion", { prompt: "x", logprobs: 6 }, 400, "logprobs"],
    ["completion", { prompt: "x", presence_penalty: 5 }, 400, "presence_penalty"],
    ["completion", { prompt: "x", frequency_penalty: "1" }, 400, "frequency_penalty"],
    ["completion", { prompt: "x", logit_bias: { abc: 1 } }, 400, "logit_bias"],
    ["completion", { prompt: "x", logit_bias: { "5": 101 } }, 400, "logit_bias.5"],
    ["completion", { prompt: "x", logit_bias: [1] }, 400, "logit_bias"],
    ["completion", { prompt: "x", echo: "yes" }, 400, "echo"],
    ["completion", { prompt: "x", echo: true, logprobs: 1 }, 400, "echo"],
    ["completion", { prompt: "x", best_of: 3 }, 400, "best_of"],
    ["completion", { prompt: "x", suffix: "tail" }, 400, "suffix"],
    ["completion", { prompt: [1, 2, 3] }, 400, "prompt"],
    ["completion", { prompt: "x", nope: 1 }, 400, "nope"],
    ["completion", { prompt: "x", user: 5 }, 400, "user"],
    ["completion", { prompt: "x", seed: 1.5 }, 400, "seed"],
    ["chat", { messages: [{ role: "user", content: "x" }], tools: 5 }, 400, "tools"],
    ["chat", { messages: [{ role: "user", content: "x" }], tools: [{ type: "function", function: { name: "a b" } }] }, 400, "tools[0].function.name"],
    ["chat", { messages: [{ role: "user", content: "x" }], tools: [{ type: "code_interpreter" }] }, 400, "tools[0].type"],
    ["chat", { messages: [{ role: "user", content: "x" }], tool_choice: "required" }, 400, "tool_choice"],
    ["chat", { messages: [{ role: "user", content: "x" }], tools: [{ type: "function", function: { name: "f" } }], tool_choice: { type: "function", function: { name: "g" } } }, 400, "tool_choice.function.name"],
    ["chat", { messages: [{ role: "user", content: "x" }], response_format: { type: "nope" } }, 400, "response_format.type"],
    ["chat", { messages: [{ role: "user", content: "x" }], response_format: { type: "json_schema" } }, 400, "response_format.json_schema"],
    ["chat", { messages: [{ role: "user", content: "x" }], response_format: { type: "json_schema", json_schema: { name: "s", schema: { type: "string", pattern: "^a" } } } }, 400, "response_format.json_schema.schema.pattern"],
    ["chat", { messages: [{ role: "user", content: "x" }], top_logprobs: 3 }, 400, "top_logprobs"],
    ["chat", { messages: [{ role: "user", content: "x" }], logprobs: true, top_logprobs: 21 }, 400, "top_logprobs"],
    ["chat", { messages: [{ role: "user", content: "x" }], audio: { voice: "x" } }, 400, "audio"],
    ["chat", { messages: [{ role: "user", content: "x" }], modalities: ["text", "audio"] }, 400, "modalities"],
    ["chat", { messages: [{ role: "user", content: "x" }], functions: [] }, 400, "functions"],
    ["chat", { messages: [{ role: "user", content: "x" }], metadata: { a: 1 } }, 400, "metadata"],
    ["chat", { messages: [{ role: "user", content: "x" }], service_tier: "gold" }, 400, "service_tier"],
    ["chat", { messages: [{ role: "user", content: "x" }], documents: "not a list" }, 400, "documents"],
  ];
  for (const [kind, body, status, param] of rows) {
    assert.throws(
      () => parseOpenAIRequest(body, kind, { modelId: SERVED }),
      (err: unknown) => {
        assert.ok(err instanceof HttpError, `${JSON.stringify(body)}: ${String(err)}`);
        assert.equal(err.status, status, JSON.stringify(body));
        assert.equal(err.param, param, JSON.stringify(body));
        assert.equal(err.body().error.type, "invalid_request_error");
        return true;
      },
    );
  }
});

test("refused parameters say they are unsupported; unknown ones are unrecognized", () => {
  const code = (body: unknown, kind: RequestKind = "completion"): string | null => {
    try {
      parseOpenAIRequest(body, kind, { modelId: SERVED });
      return "accepted";
    } catch (err) {
      return (err as HttpError).code;
    }
  };
  assert.equal(code({ prompt: "x", n: 2 }), "unsupported_parameter");
  assert.equal(code({ prompt: "x", suffix: "s" }), "unsupported_parameter");
  assert.equal(code({ messages: [{ role: "user", content: "x" }], reasoning_effort: "low" }, "chat"), "unsupported_parameter");
  assert.equal(code({ prompt: "x", frobnicate: true }), "unknown_parameter");
  assert.equal(code({ prompt: "x", presence_penalty: 9 }), "invalid_value");
});

test("label-only parameters are accepted; SDK message shapes become engine messages", () => {
  const parsed = parseOpenAIRequest(
    {
      messages: [
        { role: "developer", content: [{ type: "text", text: "be " }, { type: "text", text: "brief" }] },
        { role: "user", content: "hi", name: "ann" },
        { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }] },
        { role: "tool", tool_call_id: "c1", content: "42" },
      ],
      user: "u1",
      metadata: { team: "a" },
      store: false,
      service_tier: "auto",
      parallel_tool_calls: false,
      modalities: ["text"],
      stream_options: null,
      tools: [{ type: "function", function: { name: "f", parameters: { type: "object" } } }],
    },
    "chat",
    { modelId: SERVED },
  );
  assert.deepEqual(parsed.messages, [
    { role: "system", content: "be brief" },
    { role: "user", content: "ann: hi" },
    { role: "assistant", content: "", toolCalls: [{ id: "c1", name: "f", arguments: "{}" }] },
    { role: "tool", content: "42", toolCallId: "c1" },
  ]);
});

test("sampling extras, response formats and tool choices become the engine's sampling", () => {
  const c = parseOpenAIRequest({ prompt: "x", logprobs: 2, presence_penalty: 0.5, frequency_penalty: -1, logit_bias: { "7": -100 }, seed: -1 }, "completion", { modelId: SERVED });
  assert.deepEqual(c.sampling, { temperature: 1, topP: 1, topK: 0, seed: 2 ** 32 - 1, presencePenalty: 0.5, frequencyPenalty: -1, logitBias: [[7, -100]], logprobs: 2 });
  const chat = (extra: object): GenerationRequest => parseOpenAIRequest({ messages: [{ role: "user", content: "x" }], ...extra }, "chat", { modelId: SERVED });
  assert.equal(chat({ logprobs: true }).sampling.logprobs, 0);
  assert.equal(chat({ logprobs: true, top_logprobs: 5 }).sampling.logprobs, 5);
  assert.equal(chat({ logprobs: false }).sampling.logprobs, undefined);
  assert.match(chat({ response_format: { type: "json_object" } }).sampling.grammar ?? "", /^root ::= object/);
  assert.equal(chat({ response_format: { type: "text" } }).sampling.grammar, undefined);
  const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];
  assert.match(chat({ tools, tool_choice: "required" }).sampling.grammar ?? "", /get_weather/);
  assert.equal(chat({ tools, tool_choice: "auto" }).sampling.grammar, undefined);
  // documents: strings or {text}, handed on as their texts; a bad item is a 400 naming it.
  assert.deepEqual(chat({ documents: [{ text: "d" }, "e"] }).extensions, { documents: ["d", "e"] });
  for (const [documents, param] of [
    [[""], "documents[0]"],
    [["a", { text: 3 }], "documents[1]"],
    [["a", null], "documents[1]"],
    [Array.from({ length: 65 }, () => "d"), "documents"],
  ] as const) {
    assert.throws(() => chat({ documents }), (e: unknown) => (e as { body?: () => { error: { param: string } } }).body?.().error.param === param, param);
  }
});
