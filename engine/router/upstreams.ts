/**
 * Pod choice for the router. Policies (the Model's spec.routing.policy):
 * - least-loaded: fewest requests in flight, ties broken round-robin;
 * - round-robin: strict rotation;
 * - prefix-aware: requests whose prompts start alike go to the same pod (rendezvous hashing on
 *   the prompt's leading text, so pods keep a warm KV prefix), unless that pod is busier than
 *   the least-loaded one by more than `maxImbalance` requests.
 */
import { createHash } from "node:crypto";

export type RoutingPolicy = "prefix-aware" | "least-loaded" | "round-robin";
export const ROUTING_POLICIES: readonly RoutingPolicy[] = ["prefix-aware", "least-loaded", "round-robin"];

/** Characters of the prompt that name its prefix; about one 256-token KV block of text. */
export const PREFIX_CHARS = 1024;

export class UpstreamSet {
  private readonly inFlight = new Map<string, number>();
  private turn = 0;

  constructor(
    readonly urls: readonly string[],
    private readonly policy: RoutingPolicy = "least-loaded",
    private readonly maxImbalance = 2,
  ) {
    for (const u of urls) this.inFlight.set(u, 0);
  }

  /** All pods, best first. `prefix` is the request's leading prompt text (prefix-aware only). */
  ranked(prefix = ""): string[] {
    const start = this.turn++ % Math.max(1, this.urls.length);
    const rotated = [...this.urls.slice(start), ...this.urls.slice(0, start)];
    if (this.policy === "round-robin") return rotated;
    const byLoad = rotated.sort((a, b) => this.load(a) - this.load(b));
    if (this.policy === "least-loaded" || prefix === "") return byLoad;
    const preferred = this.byAffinity(prefix.slice(0, PREFIX_CHARS));
    const best = preferred.find((u) => this.load(u) - this.load(byLoad[0] ?? u) <= this.maxImbalance);
    return best ? [best, ...byLoad.filter((u) => u !== best)] : byLoad;
  }

  async track<T>(url: string, fn: () => Promise<T>): Promise<T> {
    this.inFlight.set(url, this.load(url) + 1);
    try {
      return await fn();
    } finally {
      this.inFlight.set(url, this.load(url) - 1);
    }
  }

  private load(url: string): number {
    return this.inFlight.get(url) ?? 0;
  }

  /** Highest-random-weight order: stable per prefix, and only 1/n of prefixes move when a pod comes or goes. */
  private byAffinity(prefix: string): string[] {
    const score = (u: string): string => createHash("sha256").update(u).update("\0").update(prefix).digest("hex");
    return [...this.urls].sort((a, b) => (score(a) < score(b) ? 1 : -1));
  }
}

/** The leading prompt text of an OpenAI request body, for prefix-aware routing. */
export function promptPrefix(body: unknown): string {
  const b = body as { prompt?: unknown; messages?: unknown };
  if (typeof b.prompt === "string") return b.prompt.slice(0, PREFIX_CHARS);
  if (Array.isArray(b.messages)) return JSON.stringify(b.messages).slice(0, PREFIX_CHARS);
  return "";
}
