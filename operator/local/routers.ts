// The routers' side of the local driver: which Services (Deployments) a router sends to, read from
// its planned arguments, and the wait for a router to let go of a process being drained.
import type { PlannedDeployment } from "./fleet.ts";

const SERVICE_URL = /http:\/\/([a-z0-9-]+)\.[a-z0-9-]+\.svc(:\d+)?/g;

type Lists = "prefill" | "decode" | "aggregated";

export interface RouterWiring {
  /** The router's Deployment name. */
  name: string;
  /** Its --upstreams-file. */
  file: string;
  /** The last generation written to the file. */
  generation: number;
  /** Service names per router flag (--prefill, --decode, --aggregated). */
  services: Record<Lists, string[]>;
  serves(service: string): boolean;
}

export function routerWiring(d: PlannedDeployment, file: string): RouterWiring {
  const servicesOf = (flag: string): string[] => {
    const at = d.args.indexOf(flag);
    return at < 0 ? [] : [...(d.args[at + 1] ?? "").matchAll(SERVICE_URL)].map((m) => m[1] ?? "");
  };
  const services = { prefill: servicesOf("--prefill"), decode: servicesOf("--decode"), aggregated: servicesOf("--aggregated") };
  return { name: d.name, file, generation: 0, services, serves: (s) => Object.values(services).some((l) => l.includes(s)) };
}

interface UpstreamsSnapshot {
  generation: number;
  prefill: Record<string, number>;
  decode: Record<string, number>;
  aggregated: Record<string, number>;
}

/** True once this router process has applied `generation` and has nothing in flight to `url`. */
async function released(router: string, generation: number, url: string): Promise<boolean> {
  try {
    const res = await fetch(`${router}/internal/upstreams`, { signal: AbortSignal.timeout(2000) });
    if (!res.ok) return false;
    const s = (await res.json()) as UpstreamsSnapshot;
    const inFlight = (s.prefill[url] ?? 0) + (s.decode[url] ?? 0) + (s.aggregated[url] ?? 0);
    return s.generation >= generation && inFlight === 0;
  } catch {
    return false; // a router that does not answer has not let go yet
  }
}

/**
 * Waits until every router process that sent to `url` has applied the file without it and has
 * no request in flight to it; false if that has not happened within `timeoutMs`.
 */
export async function drainFromRouters(routers: Array<{ generation: number; urls: string[] }>, url: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const pending = routers.flatMap((r) => r.urls.map((router) => ({ router, generation: r.generation })));
  while (Date.now() < deadline) {
    const done = await Promise.all(pending.map((p) => released(p.router, p.generation, url)));
    if (done.every(Boolean)) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}
