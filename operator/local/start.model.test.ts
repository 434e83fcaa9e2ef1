// `npm start` end to end: the quickstart fleet comes up on loopback with the real model, answers
// through the router on the P/D path, and stops cleanly on SIGINT.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");

test("npm start serves the quickstart fleet and stops on Ctrl-C", { timeout: 300_000 }, async () => {
  const port = 18_500 + Math.floor(Math.random() * 400);
  const child = spawn(process.execPath, ["--import", "tsx", "operator/local/main.ts"], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  try {
    await new Promise<void>((res, rej) => {
      const timer = setInterval(() => out.includes("fleet ready") && (clearInterval(timer), res()), 200);
      child.once("exit", (code) => (clearInterval(timer), rej(new Error(`npm start exited ${code}:\n${out}`))));
    });
    const res = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "default", prompt: "The capital of France is the city of", max_tokens: 4, temperature: 0 }),
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { choices: Array<{ text: string }> };
    assert.match(body.choices[0]?.text ?? "", /Paris/);
    assert.match(out, /started gemma-prefill-prefill#0/);
    assert.match(out, /started gemma-decode-decode#0/);
  } finally {
    child.kill("SIGINT");
    const code = await new Promise<number | null>((res) => child.once("exit", res));
    assert.equal(code, 0, out);
  }
  assert.match(out, /stopping the fleet/);
  assert.match(out, /OPEN MODE/, "open access is said loudly");
});

test("npm start --access-file: 401 without a key, served with one; engines refuse direct requests", { timeout: 300_000 }, async () => {
  const port = 18_500 + Math.floor(Math.random() * 400);
  const key = "sk-example-team-a-3f9c2b7e51d04a68"; // examples/local/access.yaml
  const child = spawn(process.execPath, ["--import", "tsx", "operator/local/main.ts", "--no-autoscale", "--access-file", "examples/local/access.yaml"], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  try {
    await new Promise<void>((res, rej) => {
      const timer = setInterval(() => out.includes("fleet ready") && (clearInterval(timer), res()), 200);
      child.once("exit", (code) => (clearInterval(timer), rej(new Error(`npm start exited ${code}:\n${out}`))));
    });
    const body = JSON.stringify({ model: "default", prompt: "The capital of France is the city of", max_tokens: 4, temperature: 0 });
    const url = `http://127.0.0.1:${port}/v1/completions`;
    assert.equal((await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body })).status, 401);
    const ok = await fetch(url, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${key}` }, body });
    assert.equal(ok.status, 200);
    const prefill = /started gemma-prefill-prefill#0 on (http:\/\/[\d.]+:\d+)/.exec(out)?.[1];
    assert.ok(prefill);
    assert.equal((await fetch(`${prefill}/internal/prefill`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })).status, 403);
    assert.ok(!out.includes(key), "the key is never logged");
    assert.doesNotMatch(out, /OPEN MODE/);
  } finally {
    child.kill("SIGINT");
    await new Promise<number | null>((res) => child.once("exit", res));
  }
});
