// Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it: acquire
// when the lease is free or expired (optimistic update on resourceVersion), renew well inside the
// lease duration, and treat a failed renewal past the deadline as lost leadership.
import type { V1Lease } from "@kubernetes/client-node";
import { isConflict, isNotFound, type KubeClient } from "../../lib/kube/client.ts";
import { R } from "../../lib/kube/resources.ts";

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  /** Seconds a lease is valid without renewal. Default 15. */
  leaseDurationSeconds?: number;
  /** Seconds between renewals and acquisition attempts. Default 2. */
  retryPeriodSeconds?: number;
}

const FIELD_MANAGER = "llmfleet/leader-election";

export class LeaderElector {
  private stopped = false;
  private leading = false;
  private readonly duration: number;
  private readonly retry: number;

  constructor(
    private readonly client: KubeClient,
    private readonly opts: LeaderElectionOptions,
  ) {
    this.duration = opts.leaseDurationSeconds ?? 15;
    this.retry = opts.retryPeriodSeconds ?? 2;
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** Waits until this identity holds the lease. */
  async acquire(): Promise<void> {
    while (!this.stopped) {
      // An unreachable API server is retried like a lease held by someone else.
      if (await this.tryAcquireOrRenew().catch(() => false)) {
        this.leading = true;
        return;
      }
      await sleep(this.retry * 1000);
    }
  }

  /** Renews until stopped; calls onLost once if the lease cannot be renewed before it expires. */
  async holdLease(onLost: () => void): Promise<void> {
    let lastRenew = Date.now();
    while (!this.stopped) {
      await sleep(this.retry * 1000);
      if (this.stopped) return;
      const ok = await this.tryAcquireOrRenew().catch(() => false);
      if (ok) lastRenew = Date.now();
      else if (Date.now() - lastRenew > this.duration * 1000 * 0.66) {
        this.leading = false;
        onLost();
        return;
      }
    }
  }

  /** Gives the lease up so another replica takes over at once. */
  async release(): Promise<void> {
    this.stopped = true;
    if (!this.leading) return;
    this.leading = false;
    const lease = await this.client.get<V1Lease>(R.Lease, this.opts.namespace, this.opts.name).catch(() => undefined);
    if (lease?.spec?.holderIdentity !== this.opts.identity) return;
    lease.spec.holderIdentity = undefined;
    lease.spec.leaseDurationSeconds = 1;
    await this.client.replace(R.Lease, lease, FIELD_MANAGER).catch(() => undefined);
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    let lease: V1Lease;
    try {
      lease = await this.client.get<V1Lease>(R.Lease, this.opts.namespace, this.opts.name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      return this.create(now);
    }
    const spec = lease.spec ?? {};
    const mine = spec.holderIdentity === this.opts.identity;
    if (!mine && spec.holderIdentity && !expired(spec, now)) return false;
    const transitions = (spec.leaseTransitions ?? 0) + (mine ? 0 : 1);
    lease.spec = {
      ...spec,
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: this.duration,
      renewTime: microTime(now),
      acquireTime: mine ? spec.acquireTime : microTime(now),
      leaseTransitions: transitions,
    };
    return this.update(lease);
  }

  private async create(now: Date): Promise<boolean> {
    const lease: V1Lease = {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: this.opts.name, namespace: this.opts.namespace },
      spec: {
        holderIdentity: this.opts.identity,
        leaseDurationSeconds: this.duration,
        acquireTime: microTime(now),
        renewTime: microTime(now),
        leaseTransitions: 0,
      },
    };
    return unlessConflict(this.client.create(R.Lease, lease, FIELD_MANAGER));
  }

  private update(lease: V1Lease): Promise<boolean> {
    return unlessConflict(this.client.replace(R.Lease, lease, FIELD_MANAGER));
  }
}

/** True when the write went through; false when another replica won the race (409 Conflict). */
async function unlessConflict(write: Promise<unknown>): Promise<boolean> {
  try {
    await write;
    return true;
  } catch (err) {
    if (isConflict(err)) return false;
    throw err;
  }
}

/** metav1.MicroTime wants exactly six fractional digits. */
export function microTime(d: Date): Date {
  return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z") as unknown as Date;
}

function expired(spec: NonNullable<V1Lease["spec"]>, now: Date): boolean {
  const renew = spec.renewTime ? new Date(spec.renewTime).getTime() : 0;
  return renew + (spec.leaseDurationSeconds ?? 15) * 1000 < now.getTime();
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
