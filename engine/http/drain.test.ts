/**
 * Graceful shutdown, as a pod gets it: the engine's own program on a tiny synthetic GGUF, a stream
 * in flight, then SIGTERM. Readiness drops at once, new requests are still served during the drain
 * delay, the stream runs to [DONE], new connections are refused after the delay, and the process
 * exits 0. Then the timeout: a stream longer than the drain timeout is cut and the process exits.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { resolve } from "node:path";
import { ensureModel } from "../model/fetch.ts";
import { nativeAddonPath } from "../native/binding.ts";
import { eventually } from "../../testing/eventually.ts";

const ROOT = resolve(import.meta.dirname, "../..");
/** Every engine a test started: killed at the end whatever happened, or a failed test would leave it running and this file would never exit. */
const started: ChildProcess[] = [];
after(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

async function startEngine(port: number, args: string[]): Promise<ChildProcess> {
  const model = await ensureModel("synthetic://tiny");
  // Built (minutes on a cold machine) or found here, so the engine's start is only its start.
  const addon = await nativeAddonPath();
  const child = spawn(process.execPath, ["--import", "tsx", "engine/main.ts", "--model", model, "--host", "127.0.0.1", "--port", String(port), "--backend", "native", "--threads", "1", "--ctx-size", "2048", "--parallel", "2", ...args], {
    cwd: ROOT,
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, LLMFLEET_NATIVE_ADDON: addon },
  });
  started.push(child);
  child.stderr!.resume();
  await eventually(async () => assert.equal((await fetch(`http://127.0.0.1:${port}/ready`)).status, 200), { timeoutMs: 60_000, message: "the engine is ready" });
  return child;
}

/** Opens a streamed completion and resolves once its first chunk arrived; `done` resolves with the whole text. */
async function openStream(port: number, maxTokens: number): Promise<{ done: Promise<string> }> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "hello world", max_tokens: maxTokens, temperature: 0, stream: true }),
  });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = decoder.decode((await reader.read()).value, { stream: true });
  const done = (async () => {
    for (;;) {
      const { done: end, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (end) return text;
      text += decoder.decode(value, { stream: true });
    }
  })();
  return { done };
}

test("SIGTERM: readiness drops, the stream in flight finishes, then the engine exits 0", async () => {
  const port = 18_700 + Math.floor(Math.random() * 200);
  const engine = await startEngine(port, ["--drain-delay-seconds", "1", "--drain-timeout-seconds", "60"]);
  const exited = once(engine, "exit");
  const stream = await openStream(port, 1800);
  engine.kill("SIGTERM");
  // Polled often: the request below must land inside the 1 s drain delay.
  await eventually(async () => assert.equal((await fetch(`http://127.0.0.1:${port}/ready`)).status, 503), { timeoutMs: 5_000, intervalMs: 50, message: "readiness drops" });
  const during = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "hello", max_tokens: 2, temperature: 0 }),
  });
  assert.equal(during.status, 200, "a request during the drain delay is still served");
  const text = await stream.done;
  assert.match(text, /data: \[DONE\]/, "the stream in flight ran to its end");
  const [code] = await exited;
  assert.equal(code, 0);
  await assert.rejects(fetch(`http://127.0.0.1:${port}/health`), "the engine no longer accepts connections");
});

test("SIGTERM: a stream longer than the drain timeout is cut, and the engine still exits", async () => {
  const port = 18_900 + Math.floor(Math.random() * 90);
  const engine = await startEngine(port, ["--drain-timeout-seconds", "0"]);
  const exited = once(engine, "exit");
  const stream = await openStream(port, 1800);
  engine.kill("SIGTERM");
  const text = await stream.done;
  assert.doesNotMatch(text, /\[DONE\]/);
  const [code] = await exited;
  assert.equal(code, 0);
});

test("a port already in use: one line naming it and exit 1, not a stack trace", async () => {
  const { createServer } = await import("node:net");
  const holder = createServer();
  await new Promise<void>((r) => holder.listen(0, "127.0.0.1", () => r()));
  const port = (holder.address() as { port: number }).port;
  try {
    // A kvstore (no model to load): the HTTP listener is what fails.
    const child = spawn(process.execPath, ["--import", "tsx", "engine/main.ts", "--role", "kvstore", "--tier", "name=ram,medium=memory,capacity=64Mi", "--host", "127.0.0.1", "--port", String(port)], {
      cwd: ROOT,
      stdio: ["ignore", "ignore", "pipe"],
    });
    started.push(child);
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const [code] = (await once(child, "exit")) as [number | null];
    assert.equal(code, 1);
    assert.match(stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(--host, --port\\): the address is already in use`));
    assert.doesNotMatch(stderr, /Unhandled 'error' event/);
  } finally {
    holder.close();
  }
});
