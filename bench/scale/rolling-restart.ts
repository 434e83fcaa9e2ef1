// A rolling restart of the routers under load, as a Deployment does it behind a Service: clients
// pick among the routers whose /ready answers 200 (the Service's endpoints, re-read every 200 ms);
// one router at a time gets SIGTERM (it drains: /ready 503 at once, serves on for its drain delay,
// then finishes what is in flight) and a new one takes its port. Every request that does not end
// in a complete stream is lost; a 429 (the router's capacity) is retried, not lost.
import { setTimeout as sleep } from "node:timers/promises";
import { LoadClient } from "../http/load-client.ts";
import type { RunningServer } from "../http/servers.ts";
import { COMPLETION_TOKENS, startRouter } from "./router-fleet.ts";

export interface RollingOptions {
  upstreams: string[];
  maxStreams: number;
  workers: number;
  nodeFlags?: string[];
  cpus?: string;
}

/** The URLs whose /ready answers 200, refreshed until stopped. */
function endpoints(urls: string[]): { ready: () => string[]; stop: () => void } {
  let ready = [...urls];
  let running = true;
  void (async (): Promise<void> => {
    while (running) {
      const ok = await Promise.all(urls.map(async (u) => (await fetch(`${u}/ready`, { signal: AbortSignal.timeout(1000) }).catch(() => undefined))?.status === 200));
      ready = urls.filter((_, i) => ok[i]);
      await sleep(200);
    }
  })();
  return { ready: () => ready, stop: () => (running = false) };
}

export async function rollingRestart(routers: RunningServer[], o: RollingOptions): Promise<Record<string, unknown>> {
  const urls = routers.map((r) => r.url);
  const clients = new Map(urls.map((u) => [u, new LoadClient(u, o.workers)]));
  const eps = endpoints(urls);
  let stop = false;
  let served = 0;
  const lost: string[] = [];
  let turn = 0;
  const load = Promise.all(Array.from({ length: o.workers }, async (_, w) => {
    for (let i = 0; !stop; i++) {
      const ready = eps.ready();
      const url = ready[turn++ % Math.max(1, ready.length)];
      const client = url ? clients.get(url) : undefined;
      if (!client) {
        await sleep(100);
        continue;
      }
      const res = await client.complete({ prompt: `P${300_000 + ((w * 131 + i) % 1000)}| rolling`, maxTokens: COMPLETION_TOKENS });
      if (res.status === 429) await sleep(1000);
      else if (res.ok && res.complete) served++;
      else lost.push(`${url}: ${res.status} ${res.error ?? "incomplete stream"}`);
    }
  }));
  const t0 = Date.now();
  await sleep(3000);
  for (let i = 0; i < routers.length; i++) {
    const old = routers[i];
    if (!old) continue;
    await old.stop(90_000); // a grace period longer than the router's drain timeout (60 s), as the planned pod has
    routers[i] = await startRouter({ upstreams: o.upstreams, maxStreams: o.maxStreams, nodeFlags: o.nodeFlags, cpus: o.cpus, port: Number(new URL(old.url).port) });
    await sleep(3000);
  }
  stop = true;
  await load;
  eps.stop();
  for (const c of clients.values()) c.close();
  return { rolling_restart_seconds: (Date.now() - t0) / 1000, rolling_restart_served: served, rolling_restart_lost: lost.length, rolling_restart_lost_examples: lost.slice(0, 5) };
}
