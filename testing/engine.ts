/** Test harness: start apps on loopback ephemeral ports, in-process, and talk to them. */
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import type { Express } from "express";
import { createModelPod, type ModelPod, type ModelPodOptions } from "../engine/pod.ts";
import { createEngineMetrics } from "../engine/metrics/engine-metrics.ts";
import { createRouterApp } from "../engine/router/router-app.ts";

export interface Running extends AsyncDisposable {
  url: string;
  server: Server;
}

export async function listen(app: Express): Promise<Running> {
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    async [Symbol.asyncDispose](): Promise<void> {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface RunningPod extends Running {
  pod: ModelPod;
}

export async function startPod(opts: Partial<ModelPodOptions> & { model: string }): Promise<RunningPod> {
  const pod = await createModelPod({ role: "aggregated", threads: 1, ctxSize: 512, parallel: 2, maxQueue: 8, ...opts });
  const running = await listen(pod.app);
  return {
    ...running,
    pod,
    async [Symbol.asyncDispose](): Promise<void> {
      await running[Symbol.asyncDispose]();
      await pod[Symbol.asyncDispose]();
    },
  };
}

/** An aggregated pod beside a prefill pod, a decode pod and a router over the two, all of one model: what the P/D tests compare. */
export interface PdFleet extends AsyncDisposable {
  aggregated: RunningPod;
  prefill: RunningPod;
  decode: RunningPod;
  router: Running;
}

type PodOpts = Partial<ModelPodOptions>;

/** Starts a PdFleet of `model`; each pod gets its own options on top of its role (parallel 2, the prefill pod's 1 unless given). */
export async function startPdFleet(model: string, opts: { aggregated?: PodOpts; prefill?: PodOpts; decode?: PodOpts } = {}): Promise<PdFleet> {
  const started: AsyncDisposable[] = [];
  const keep = <T extends AsyncDisposable>(r: T): T => (started.push(r), r);
  try {
    const aggregated = keep(await startPod({ model, parallel: 2, ...opts.aggregated }));
    const decode = keep(await startPod({ model, role: "decode", parallel: 2, ...opts.decode }));
    const prefill = keep(await startPod({ model, role: "prefill", parallel: 1, ...opts.prefill }));
    const router = keep(await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") })));
    return { aggregated, prefill, decode, router, [Symbol.asyncDispose]: () => disposeAll(started) };
  } catch (err) {
    await disposeAll(started);
    throw err;
  }
}

/** Stops them last-started first. */
async function disposeAll(started: AsyncDisposable[]): Promise<void> {
  for (const r of [...started].reverse()) await r[Symbol.asyncDispose]();
}

export async function postJson(url: string, body: unknown, signal?: AbortSignal): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {}, headers: res.headers };
}

export async function completionText(url: string, body: Record<string, unknown>): Promise<string> {
  const { status, json } = await postJson(`${url}/v1/completions`, { temperature: 0, ...body });
  if (status !== 200) throw new Error(`status ${status}: ${JSON.stringify(json)}`);
  return (json.choices as { text: string }[])[0]!.text;
}

/** A greedy completion's text and how many prompt tokens it reused (usage.prompt_tokens_details.cached_tokens). */
export async function completionWithReuse(url: string, prompt: string, maxTokens = 12): Promise<{ text: string; cached: number }> {
  const { status, json } = await postJson(`${url}/v1/completions`, { prompt, max_tokens: maxTokens, temperature: 0 });
  if (status !== 200) throw new Error(`status ${status}: ${JSON.stringify(json)}`);
  const usage = json.usage as { prompt_tokens_details: { cached_tokens: number } };
  return { text: (json.choices as { text: string }[])[0]!.text, cached: usage.prompt_tokens_details.cached_tokens };
}

/** Milliseconds from sending a streamed completion to its first data event (the client's TTFT); the stream is read to its end. */
export async function streamTtftMs(url: string, prompt: string, maxTokens: number): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, stream: true }),
  });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let first = NaN;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (Number.isNaN(first) && decoder.decode(value, { stream: true }).includes("data: {")) first = performance.now() - t0;
  }
  return first;
}

/** Reads an SSE response into its data payloads. */
export async function sseEvents(res: globalThis.Response): Promise<string[]> {
  const text = await res.text();
  return text
    .split("\n\n")
    .map((e) => e.trim())
    .filter((e) => e.startsWith("data: "))
    .map((e) => e.slice(6));
}

export async function metricValue(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name));
  return line ? Number(line.split(" ").pop()) : NaN;
}
