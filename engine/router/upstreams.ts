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
    private current: readonly string[],
    private readonly policy: RoutingPolicy = "least-loaded",
    private readonly maxImbalance = 2,
  ) {
    for (const u of current) this.inFlight.set(u, 0);
  }

  get urls(): readonly string[] {
    return this.current;
  }

  /** New pods get requests from now on; a removed pod gets no new request, and its requests in flight finish. */
  replace(urls: readonly string[]): void {
    this.current = [...urls];
    for (const u of urls) this.inFlight.set(u, this.load(u));
    for (const [u, n] of this.inFlight) if (n === 0 && !urls.includes(u)) this.inFlight.delete(u);
  }

  /** Requests in flight per pod, removed pods that still have some included (they are draining). */
  inFlightByUrl(): Record<string, number> {
    return Object.fromEntries(this.inFlight);
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
      const left = this.load(url) - 1;
      if (left === 0 && !this.current.includes(url)) this.inFlight.delete(url);
      else this.inFlight.set(url, left);
    }
  }

  private load(url: string): number {
    return this.inFlight.get(url) ?? 0;
  }

  /**
   * Highest-random-weight order: stable per prefix, and only 1/n of prefixes move when a pod comes
   * or goes. A function of the pod URLs and the prefix alone, so every router replica that sees the
   * same pods ranks them the same. The prefix is hashed once and mixed with each pod's own hash
   * (computed once per pod): a SHA-256 per pod and comparison cost milliseconds at 100 pods.
   */
  private byAffinity(prefix: string): string[] {
    const p = fnv1a(prefix);
    const scored = this.urls.map((u) => ({ u, score: mix32(this.seedOf(u) ^ p) }));
    scored.sort((a, b) => b.score - a.score || (a.u < b.u ? -1 : 1));
    return scored.map((s) => s.u);
  }

  private readonly seeds = new Map<string, number>();

  private seedOf(url: string): number {
    let seed = this.seeds.get(url);
    if (seed === undefined) {
      seed = createHash("sha256").update(url).digest().readUInt32BE(0);
      if (this.seeds.size > 4 * this.urls.length + 64) this.seeds.clear(); // pods come and go: keep it bounded
      this.seeds.set(url, seed);
    }
    return seed;
  }
}

/** 32-bit FNV-1a of a string's UTF-16 code units. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** MurmurHash3's finaliser: every input bit moves every output bit, so nearby inputs score far apart. */
export function mix32(x: number): number {
  let h = x >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

export interface UpstreamLists {
  prefill: string[];
  decode: string[];
  aggregated: string[];
}

/** The router's pods by role, replaceable while it serves (--upstreams-file); `generation` says which lists are applied. */
export class RouterUpstreams {
  readonly prefill: UpstreamSet;
  readonly decode: UpstreamSet;
  readonly aggregated: UpstreamSet;
  generation = 0;

  constructor(lists: UpstreamLists, policy: RoutingPolicy = "least-loaded") {
    this.prefill = new UpstreamSet(lists.prefill, policy);
    // Decode pods are chosen by load alone: a decode pod holds no prompt prefix worth returning to.
    this.decode = new UpstreamSet(lists.decode);
    this.aggregated = new UpstreamSet(lists.aggregated, policy);
  }

  replace(lists: UpstreamLists, generation: number): void {
    this.prefill.replace(lists.prefill);
    this.decode.replace(lists.decode);
    this.aggregated.replace(lists.aggregated);
    this.generation = generation;
  }

  /** What GET /internal/upstreams answers: the applied generation, and requests in flight per pod (draining pods included). */
  snapshot(): { generation: number; prefill: Record<string, number>; decode: Record<string, number>; aggregated: Record<string, number> } {
    return {
      generation: this.generation,
      prefill: this.prefill.inFlightByUrl(),
      decode: this.decode.inFlightByUrl(),
      aggregated: this.aggregated.inFlightByUrl(),
    };
  }
}

/**
 * Prefix-aware routing's key: the prompt's leading text, scoped by the tenant's KV namespace, so
 * two tenants' equal prompts are spread like unrelated ones (a pod's warm prefix is only ever
 * its own tenant's to use, and routing reveals nothing across tenants).
 */
export function affinityKey(body: unknown, kvNamespace: string): string {
  const prefix = promptPrefix(body);
  return kvNamespace === "" || prefix === "" ? prefix : `${kvNamespace}\0${prefix}`;
}

/**
 * The leading prompt text of an OpenAI request body, for prefix-aware routing. With `documents`
 * (the RAG extension) the prompt starts with the first document (engine/serving/documents.ts), so
 * requests sharing it meet on the pod that holds its KV.
 */
export function promptPrefix(body: unknown): string {
  const b = body as { prompt?: unknown; messages?: unknown; documents?: unknown };
  const first: unknown = Array.isArray(b.documents) ? b.documents[0] : undefined;
  const doc = typeof first === "string" ? first : (first as { text?: unknown } | undefined)?.text;
  if (typeof doc === "string" && doc !== "") return `\0document\0${doc}`.slice(0, PREFIX_CHARS);
  if (typeof b.prompt === "string") return b.prompt.slice(0, PREFIX_CHARS);
  if (Array.isArray(b.messages)) return JSON.stringify(b.messages).slice(0, PREFIX_CHARS);
  return "";
}
