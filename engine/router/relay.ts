/** Relays a decode pod's response to the client, measuring TTFT and inter-token latency. */
import type { Response } from "express";
import type { EngineMetrics } from "../metrics/engine-metrics.ts";
import { HttpError } from "../http/http-error.ts";
import { writeSse } from "../http/respond.ts";
import { promptTokensOf, tokenMeterOf, usageOf, type TokenMeter } from "../access/identity.ts";

/** A decode stream silent this long is treated as dead (never hang the client). */
export const STREAM_IDLE_TIMEOUT_MS = 60_000;

interface TokenClock {
  arrivedAt: number;
  last: number | undefined;
}

function observeEvents(text: string, clock: TokenClock, metrics: EngineMetrics, meter?: TokenMeter): boolean {
  let done = false;
  for (const line of text.split("\n")) {
    if (!line.startsWith("data: ")) continue;
    const data = line.slice(6);
    if (data === "[DONE]") {
      done = true;
      continue;
    }
    if (!data.includes('"content"') && !/"text":"[^"]/.test(data)) continue;
    const now = performance.now();
    if (clock.last === undefined) metrics.ttft.observe((now - clock.arrivedAt) / 1000);
    else metrics.interTokenLatency.observe((now - clock.last) / 1000);
    metrics.generatedTokens.inc();
    meter?.completion(1);
    clock.last = now;
  }
  return done;
}

async function readWithIdleTimeout(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<ReadableStreamReadResult<Uint8Array>> {
  let timer: NodeJS.Timeout | undefined;
  const idle = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`decode pod sent nothing for ${STREAM_IDLE_TIMEOUT_MS / 1000}s`)), STREAM_IDLE_TIMEOUT_MS);
  });
  try {
    return await Promise.race([reader.read(), idle]);
  } finally {
    clearTimeout(timer);
  }
}

export async function relayStream(upstream: globalThis.Response, res: Response, metrics: EngineMetrics, arrivedAt: number): Promise<void> {
  // No Connection header of our own: Node's says keep-alive with the server's Keep-Alive timeout (so
  // clients drop an idle connection before the server closes it), and close while the server drains
  // (engine/http/drain.ts). An explicit "Connection: keep-alive" overrode both, and a client sent its
  // next request on a connection the drain was closing: lost in a rolling restart ("socket hang up").
  res.status(200).set({ "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
  res.flushHeaders();
  const reader = upstream.body!.getReader();
  const decoder = new TextDecoder();
  const clock: TokenClock = { arrivedAt, last: undefined };
  const meter = tokenMeterOf(res);
  meter?.prompt(promptTokensOf(upstream));
  let sawDone = false;
  try {
    for (;;) {
      const { done, value } = await readWithIdleTimeout(reader);
      if (done) break;
      res.write(value);
      sawDone = observeEvents(decoder.decode(value, { stream: true }), clock, metrics, meter) || sawDone;
    }
    if (!sawDone) throw new Error("decode pod closed the stream before [DONE]");
  } catch (err) {
    metrics.handoffFailures.inc({ reason: "decode_stream" });
    writeSse(res, new HttpError(502, `decode failed mid-generation: ${(err as Error).message}`, { code: "decode_failed" }).body());
    await reader.cancel().catch(() => undefined);
  }
  res.end();
}

export async function relayWhole(upstream: globalThis.Response, res: Response): Promise<void> {
  const text = await upstream.text();
  const meter = tokenMeterOf(res);
  if (meter && upstream.ok) {
    const usage = usageOf(text);
    meter.prompt(usage.prompt);
    meter.completion(usage.completion);
  }
  res.status(upstream.status).type("application/json").send(text);
}
