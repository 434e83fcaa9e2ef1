/**
 * Per-tenant limits in the router: requests per minute and tokens per minute as token buckets
 * (full at start, refilled continuously), concurrent streams as a count. With several router
 * replicas each holds its share of every budget: the limit divided by the number of ready
 * routers (`share()`, from the router Service's EndpointSlices in a cluster), so the fleet admits
 * the tenant's limit in total without counters shared between routers. Clients spread over the
 * routers by the Service; a client pinned to one router sees only that router's share.
 *
 * Tokens are debited as they stream: a request is admitted while the token bucket is above zero,
 * and its prompt and completion tokens are taken as they are known, so a long generation may
 * drive the bucket below zero; the tenant's next request then waits until it has refilled.
 */
import type { TenantLimits } from "./tenants.ts";

export type LimitName = "requests_per_minute" | "tokens_per_minute" | "concurrent_streams";

export class LimitExceeded extends Error {
  constructor(
    readonly limit: LimitName,
    readonly retryAfterSeconds: number,
    message: string,
  ) {
    super(message);
  }
}

class Bucket {
  level: number;
  private last: number;

  constructor(
    readonly capacity: number,
    now: number,
  ) {
    this.level = capacity;
    this.last = now;
  }

  refill(now: number): void {
    this.level = Math.min(this.capacity, this.level + ((now - this.last) * this.capacity) / 60_000);
    this.last = now;
  }

  /** Seconds until the level reaches `need`. */
  secondsUntil(need: number): number {
    return Math.max(1, Math.ceil(((need - this.level) * 60) / this.capacity));
  }
}

interface TenantState {
  requests?: Bucket;
  tokens?: Bucket;
  streams: number;
  /** The limits and share the buckets were sized for. */
  sizedFor: string;
}

/** What an admitted request holds: give the tokens as they are known, release once at the end. */
export interface Admission {
  debitTokens(n: number): void;
  release(): void;
}

export interface LimiterOptions {
  /** Routers sharing the budgets (ready replicas); read at each admission. Default 1. */
  share?: () => number;
  now?: () => number;
}

export class TenantLimiter {
  private readonly state = new Map<string, TenantState>();
  private readonly share: () => number;
  private readonly now: () => number;

  constructor(opts: LimiterOptions = {}) {
    this.share = opts.share ?? ((): number => 1);
    this.now = opts.now ?? ((): number => performance.now());
  }

  private stateOf(tenant: string, limits: TenantLimits, now: number): TenantState {
    const share = Math.max(1, Math.floor(this.share()));
    const sizedFor = JSON.stringify([limits, share]);
    const old = this.state.get(tenant);
    if (old?.sizedFor === sizedFor) return old;
    const per = (n: number | undefined): Bucket | undefined => (n === undefined ? undefined : new Bucket(Math.max(1, n / share), now));
    const fresh: TenantState = { requests: per(limits.requestsPerMinute), tokens: per(limits.tokensPerMinute), streams: old?.streams ?? 0, sizedFor };
    this.state.set(tenant, fresh);
    return fresh;
  }

  private streamLimit(limits: TenantLimits): number | undefined {
    const n = limits.concurrentStreams;
    return n === undefined ? undefined : Math.max(1, Math.floor(n / Math.max(1, Math.floor(this.share()))));
  }

  /** Admits one request of `tenant` or throws LimitExceeded naming the limit that was hit. */
  admit(tenant: string, limits: TenantLimits): Admission {
    const now = this.now();
    const s = this.stateOf(tenant, limits, now);
    s.requests?.refill(now);
    s.tokens?.refill(now);
    const streams = this.streamLimit(limits);
    if (streams !== undefined && s.streams >= streams)
      throw new LimitExceeded("concurrent_streams", 1, `tenant ${tenant} has ${s.streams} requests in flight, its limit on this router is ${streams}`);
    if (s.requests && s.requests.level < 1)
      throw new LimitExceeded("requests_per_minute", s.requests.secondsUntil(1), `tenant ${tenant} is over its requests-per-minute limit`);
    if (s.tokens && s.tokens.level <= 0)
      throw new LimitExceeded("tokens_per_minute", s.tokens.secondsUntil(1), `tenant ${tenant} is over its tokens-per-minute limit`);
    if (s.requests) s.requests.level -= 1;
    s.streams++;
    let released = false;
    return {
      debitTokens: (n: number): void => {
        const bucket = this.state.get(tenant)?.tokens;
        if (!bucket || n <= 0) return;
        bucket.refill(this.now());
        bucket.level = Math.max(-bucket.capacity, bucket.level - n);
      },
      release: (): void => {
        if (released) return;
        released = true;
        const cur = this.state.get(tenant);
        if (cur) cur.streams = Math.max(0, cur.streams - 1);
      },
    };
  }
}
