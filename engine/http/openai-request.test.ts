/** Standalone, no model: OpenAI completion and chat bodies into GenerationRequests, or the 4xx that names the field. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { HttpError } from "./http-error.ts";
import { parseOpenAIRequest } from "./openai-request.ts";
import type { RequestKind } from "../serving/request.ts";

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
    const parsed = parseOpenAIRequest(body, kind, SERVED) as unknown as Record<string, unknown>;
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
    ["chat", { messages: [{ role: "wizard", content: "x" }] }, 400, "messages[0]"],
    ["chat", { messages: [{ role: "user", content: "x" }, { role: "user" }] }, 400, "messages[1]"],
  ];
  for (const [kind, body, status, param] of rows) {
    assert.throws(
      () => parseOpenAIRequest(body, kind, SERVED),
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
