/**
 * Prefill and decode as two processes on one GPU: the hand-off's TTFT overhead against
 * aggregated serving. The prefill side (this process) evaluates the prompt and exports the
 * sequence state; it goes over loopback HTTP to a decode process (this script with
 * --pd-decode-server), which imports it and samples the first token — what the engine's P/D
 * roles do (state export, transfer, import), on NativeRuntime in both processes.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { NativeRuntime } from "../../engine/runtime/native-runtime.ts";
import type { Token } from "../../engine/runtime/runtime.ts";
import { GREEDY, median, randomTokens } from "./measure.ts";

async function firstToken(rt: NativeRuntime, last: Token): Promise<Token> {
  for await (const t of rt.sequences[0]!.generate([last], GREEDY)) return t;
  return -1;
}

async function body(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of req) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

function runtime(model: string, contextSize: number): Promise<NativeRuntime> {
  return NativeRuntime.load({ modelPath: model, threads: 8, contextSize, parallel: 1, batchSize: 2048, flashAttention: true, gpuLayers: -1 });
}

/** The decode process: POST / with a ggsq state and x-last-token → imports, samples the first token, answers it. */
export async function decodeServer(model: string, contextSize: number): Promise<void> {
  const rt = await runtime(model, contextSize);
  const server = createServer((req, res) => {
    void (async (): Promise<void> => {
      const state = await body(req);
      await rt.sequences[0]!.clear();
      await rt.sequences[0]!.importState(state);
      const token = await firstToken(rt, Number(req.headers["x-last-token"]));
      res.end(JSON.stringify({ token }));
    })().catch((err: unknown) => {
      res.statusCode = 500;
      res.end(String(err));
    });
  });
  server.listen(0, "127.0.0.1", () => console.log(`listening ${(server.address() as AddressInfo).port}`));
}

function startDecode(script: string, model: string, contextSize: number): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [script, "--model", model, "--pd-decode-server", String(contextSize)], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    child.stdout?.on("data", (d: Buffer) => {
      const m = /listening (\d+)/.exec(d.toString());
      if (m) resolve({ child, port: Number(m[1]) });
    });
    child.on("exit", (code) => reject(new Error(`decode process exited (${code})`)));
  });
}

export interface PdRun {
  promptTokens: number;
  stateBytes: number;
  ttftAggregatedSeconds: number;
  ttftDisaggregatedSeconds: number;
  overhead: number;
}

async function once(rt: NativeRuntime, prompt: Token[], port: number): Promise<{ agg: number; pd: number; bytes: number }> {
  const seq = rt.sequences[0]!;
  await seq.clear();
  await rt.synchronize();
  let t0 = performance.now();
  await seq.evaluatePrefix(prompt.slice(0, -1));
  await firstToken(rt, prompt.at(-1)!);
  const agg = (performance.now() - t0) / 1000;
  await seq.clear();
  await rt.synchronize();
  t0 = performance.now();
  await seq.evaluatePrefix(prompt.slice(0, -1));
  const state = await seq.exportState();
  const res = await fetch(`http://127.0.0.1:${port}/`, {
    method: "POST",
    body: new Blob([new Uint8Array(state.buffer as ArrayBuffer, state.byteOffset, state.length)]),
    headers: { "x-last-token": String(prompt.at(-1)) },
  });
  if (!res.ok) throw new Error(`decode process: ${res.status} ${await res.text()}`);
  await res.json();
  return { agg, pd: (performance.now() - t0) / 1000, bytes: state.length };
}

/** TTFT aggregated vs prefill→decode hand-off, per prompt length (median of `repeats`). */
export async function pdOverhead(script: string, model: string, lengths: number[], repeats: number): Promise<PdRun[]> {
  const contextSize = Math.max(...lengths) + 64;
  const { child, port } = await startDecode(script, model, contextSize);
  const rt = await runtime(model, contextSize);
  try {
    const vocab = rt.engine.info().nVocab;
    await once(rt, randomTokens(256, 3, vocab), port);
    const runs: PdRun[] = [];
    for (const n of lengths) {
      const got = [];
      for (let r = 0; r < repeats; r++) got.push(await once(rt, randomTokens(n, 100 + r, vocab), port));
      const agg = median(got.map((g) => g.agg));
      const pd = median(got.map((g) => g.pd));
      runs.push({ promptTokens: n, stateBytes: got[0]!.bytes, ttftAggregatedSeconds: agg, ttftDisaggregatedSeconds: pd, overhead: pd / agg });
    }
    return runs;
  } finally {
    await rt[Symbol.asyncDispose]();
    child.kill("SIGTERM");
  }
}
