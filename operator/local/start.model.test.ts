// `npm start` end to end: the quickstart fleet comes up on loopback with the real model, answers
// through the router on the P/D path, and stops cleanly on SIGINT.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");

/** `npm start` with `args` on a random port: its output so far, readiness ("fleet ready"), and Ctrl-C. */
function startFleet(args: string[]): { port: number; output: () => string; ready: Promise<void>; stop: () => Promise<number | null> } {
  const port = 18_500 + Math.floor(Math.random() * 400);
  const child = spawn(process.execPath, ["--import", "tsx", "operator/local/main.ts", ...args], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((res) => child.once("exit", res));
  const ready = new Promise<void>((res, rej) => {
    const timer = setInterval(() => out.includes("fleet ready") && (clearInterval(timer), res()), 200);
    void exited.then((code) => (clearInterval(timer), rej(new Error(`npm start exited ${code}:\n${out}`))));
  });
  ready.catch(() => undefined); // awaited by the test; this only keeps a late exit from being unhandled
  return {
    port,
    output: () => out,
    ready,
    stop: () => (child.kill("SIGINT"), exited),
  };
}

test("npm start serves the quickstart fleet and stops on Ctrl-C", { timeout: 300_000 }, async () => {
  const fleet = startFleet([]);
  const port = fleet.port;
  try {
    await fleet.ready;
    const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "default", prompt: "The capital of France is the city of", max_tokens: 4, temperature: 0 }),
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { choices: Array<{ text: string }> };
    assert.match(body.choices[0]?.text ?? "", /Paris/);
    assert.match(fleet.output(), /started gemma-prefill-prefill#0/);
    assert.match(fleet.output(), /started gemma-decode-decode#0/);
  } finally {
    assert.equal(await fleet.stop(), 0, fleet.output());
  }
  assert.match(fleet.output(), /stopping the fleet/);
  assert.match(fleet.output(), /OPEN MODE/, "open access is said loudly");
});

test("npm start --access-file: 401 without a key, served with one; engines refuse direct requests", { timeout: 300_000 }, async () => {
  const key = "sk-example-team-a-3f9c2b7e51d04a68"; // examples/local/access.yaml
  const fleet = startFleet(["--no-autoscale", "--access-file", "examples/local/access.yaml"]);
  const port = fleet.port;
  try {
    await fleet.ready;
    const body = JSON.stringify({ model: "default", prompt: "The capital of France is the city of", max_tokens: 4, temperature: 0 });
    const url = `http://127.0.0.1:${port}/v1/completions`;
    assert.equal((await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body })).status, 401);
    const ok = await fetch(url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${key}` }, body });
    assert.equal(ok.status, 200);
    const prefill = /started gemma-prefill-prefill#0 on (http:\/\/[\d.]+:\d+)/.exec(fleet.output())?.[1];
    assert.ok(prefill);
    assert.equal((await fetch(`${prefill}/internal/prefill`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })).status, 403);
    assert.ok(!fleet.output().includes(key), "the key is never logged");
    assert.doesNotMatch(fleet.output(), /OPEN MODE/);
  } finally {
    await fleet.stop();
  }
});

// Issue 21's "done when", on the path a newcomer runs: the official `openai` client against the
// router of `npm start` (router → prefill → decode, the real model).
test("npm start with the official openai client: usage, logprobs, JSON schema, tools, 400s, malformed bodies", { timeout: 420_000 }, async () => {
  const { default: OpenAI } = await import("openai");
  const fleet = startFleet(["--no-autoscale"]);
  const port = fleet.port;
  try {
    await fleet.ready;
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "unused", maxRetries: 0 });

    // Streamed usage arrives as the last chunk.
    const stream = await client.chat.completions.create({
      model: "default",
      messages: [{ role: "user", content: "Say hello." }],
      max_tokens: 6,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: { prompt_tokens: number; completion_tokens: number } | undefined;
    let streamed = "";
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    assert.ok(usage && usage.prompt_tokens > 0 && usage.completion_tokens > 0 && usage.completion_tokens <= 6, JSON.stringify(usage));
    assert.ok(streamed.length > 0);

    // Logprobs come back for the answer's tokens.
    const lp = await client.chat.completions.create({ model: "default", messages: [{ role: "user", content: "Say hello." }], temperature: 0, max_tokens: 6, logprobs: true, top_logprobs: 2 });
    const content = lp.choices[0]!.logprobs!.content!;
    assert.equal(content.map((t) => t.token).join(""), lp.choices[0]!.message.content);
    assert.ok(content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 2));

    // A JSON-schema answer parses and validates.
    const schema = {
      type: "object",
      properties: { city: { type: "string", maxLength: 40 }, country: { type: "string", maxLength: 40 } },
      required: ["city", "country"],
      additionalProperties: false,
    };
    const js = await client.chat.completions.create({
      model: "default",
      messages: [{ role: "user", content: "Name the capital of France and its country as JSON." }],
      temperature: 0,
      max_tokens: 60,
      response_format: { type: "json_schema", json_schema: { name: "capital", schema, strict: true } },
    });
    const v = JSON.parse(js.choices[0]!.message.content!) as Record<string, unknown>;
    assert.deepEqual(Object.keys(v), ["city", "country"]);
    assert.ok(typeof v.city === "string" && typeof v.country === "string");

    // A tool call round-trips: call, result, answer.
    const tools = [
      {
        type: "function" as const,
        function: {
          name: "get_weather",
          description: "Current weather of a city",
          parameters: { type: "object", properties: { city: { type: "string", maxLength: 40 } }, required: ["city"], additionalProperties: false },
        },
      },
    ];
    const ask = [{ role: "user" as const, content: "What is the weather in Paris?" }];
    const first = await client.chat.completions.create({ model: "default", messages: ask, tools, tool_choice: "required", temperature: 0, max_tokens: 60 });
    assert.equal(first.choices[0]!.finish_reason, "tool_calls");
    const call = first.choices[0]!.message.tool_calls![0]!;
    assert.equal(call.type, "function");
    assert.equal(call.type === "function" ? call.function.name : "", "get_weather");
    const answer = await client.chat.completions.create({
      model: "default",
      messages: [...ask, first.choices[0]!.message, { role: "tool", tool_call_id: call.id, content: '{"temperature_c": 21}' }],
      tools,
      tool_choice: "none",
      temperature: 0,
      max_tokens: 20,
    });
    assert.ok((answer.choices[0]!.message.content ?? "").length > 0);

    // Invalid or unsupported parameters: 400 naming the parameter.
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ presence_penalty: 5 }, "presence_penalty"],
      [{ logprobs: "x" }, "logprobs"],
      [{ response_format: { type: "nope" } }, "response_format.type"],
      [{ tools: 5 }, "tools"],
      [{ n: 2 }, "n"],
    ];
    for (const [extra, param] of bad) {
      await assert.rejects(
        client.chat.completions.create({ model: "default", messages: [{ role: "user", content: "hi" }], max_tokens: 2, ...extra } as never),
        (err: { status?: number; param?: string }) => err.status === 400 && err.param === param,
        param,
      );
    }

    // Malformed, deeply nested or wrongly typed bodies: 4xx, never 5xx.
    const url = `http://127.0.0.1:${port}/v1/chat/completions`;
    const bodies: Array<[string, string]> = [
      ["text/plain", JSON.stringify({ model: "default", messages: [{ role: "user", content: "hi" }] })],
      ["application/json", "[".repeat(100_000) + "]".repeat(100_000)],
      ["application/json", '{"model": "default", "messages": '],
      ["application/json", JSON.stringify({ model: "default", messages: "hi" })],
    ];
    for (const [type, body] of bodies) {
      const res = await fetch(url, { method: "POST", headers: { "content-type": type }, body });
      assert.ok(res.status >= 400 && res.status < 500, `${type} ${body.slice(0, 40)}: ${res.status}`);
    }
  } finally {
    await fleet.stop();
  }
});
