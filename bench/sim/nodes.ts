// Replicas and the GPU nodes under them in the fleet replay. A replica holds a GPU from the
// moment one is free on a ready node (model load starts then) until it is removed and its last
// prefill is done. Nodes take provisioningSeconds to come; a node's worth of unused GPUs is given
// back after the scale-down delay; nodes still provisioning and no longer needed are cancelled.
export class Replica {
  gpuAt: number | undefined;
  readyAt = Infinity;
  free = 0;
  drainAt: number | undefined;
  releasedAt: number | undefined;

  constructor(readonly id: number) {}

  static warm(id: number): Replica {
    const r = new Replica(id);
    r.gpuAt = 0;
    r.readyAt = 0;
    return r;
  }

  serving(t: number): boolean {
    return !this.leaving() && this.readyAt <= t;
  }

  /** Takes new requests: not leaving and holding a GPU (it may still be loading; work then starts at readyAt). */
  accepting(): boolean {
    return !this.leaving() && this.gpuAt !== undefined;
  }

  availableAt(): number {
    return Math.max(this.free, this.readyAt);
  }

  leaving(): boolean {
    return this.drainAt !== undefined || this.releasedAt !== undefined;
  }

  holdsGpu(): boolean {
    return this.gpuAt !== undefined && this.releasedAt === undefined;
  }

  waiting(): boolean {
    return this.gpuAt === undefined && !this.leaving();
  }

  drain(t: number): void {
    this.drainAt = t;
    if (this.gpuAt === undefined) this.releasedAt = t;
  }

  /** A draining replica gives its GPU back once its last prefill is done (or at once while still loading). */
  settle(t: number): void {
    if (this.drainAt === undefined || this.releasedAt !== undefined) return;
    if (this.free <= t || this.readyAt > t) this.releasedAt = Math.max(this.drainAt, Math.min(this.free, t));
  }

  release(t: number): void {
    this.releasedAt ??= t;
  }

  gpuSeconds(): number {
    return this.gpuAt === undefined ? 0 : (this.releasedAt ?? this.gpuAt) - this.gpuAt;
  }
}

interface SimNode {
  requestedAt: number;
  readyAt: number;
  removedAt?: number;
}

export interface NodePoolConfig {
  gpusPerNode: number;
  minNodes: number;
  provisioningSeconds: number;
  nodeScaleDownDelaySeconds: number;
  loadSeconds: number;
}

export class NodePool {
  private readonly nodes: SimNode[] = [];
  private spareSince: number | undefined;
  private end = 0;

  constructor(private readonly cfg: NodePoolConfig) {}

  reserveWarm(replicas: number): void {
    const n = Math.max(this.cfg.minNodes, Math.ceil(replicas / this.cfg.gpusPerNode));
    for (let i = 0; i < n; i++) this.nodes.push({ requestedAt: 0, readyAt: 0 });
  }

  private live(): SimNode[] {
    return this.nodes.filter((n) => n.removedAt === undefined);
  }

  step(t: number, replicas: Replica[]): void {
    for (const r of replicas) r.settle(t);
    this.assign(t, replicas);
    const need = replicas.filter((r) => r.holdsGpu() || r.waiting()).length;
    this.provision(t, need);
    this.shrink(t, need);
  }

  private assign(t: number, replicas: Replica[]): void {
    const readyGpus = this.live().filter((n) => n.readyAt <= t).length * this.cfg.gpusPerNode;
    let used = replicas.filter((r) => r.holdsGpu()).length;
    for (const r of replicas) {
      if (used >= readyGpus) return;
      if (!r.waiting()) continue;
      r.gpuAt = t;
      r.readyAt = t + this.cfg.loadSeconds;
      used++;
    }
  }

  private provision(t: number, need: number): void {
    const capacity = this.live().length * this.cfg.gpusPerNode;
    const missing = Math.ceil((need - capacity) / this.cfg.gpusPerNode);
    for (let i = 0; i < missing; i++) this.nodes.push({ requestedAt: t, readyAt: t + this.cfg.provisioningSeconds });
  }

  private shrink(t: number, need: number): void {
    const live = this.live();
    const spareNodes = Math.floor((live.length * this.cfg.gpusPerNode - need) / this.cfg.gpusPerNode);
    const removable = Math.min(spareNodes, live.length - this.cfg.minNodes);
    if (removable <= 0) {
      this.spareSince = undefined;
      return;
    }
    const pending = live.filter((n) => n.readyAt > t).slice(0, removable);
    for (const n of pending) n.removedAt = t;
    if (pending.length > 0) return;
    this.spareSince ??= t;
    if (t - this.spareSince < this.cfg.nodeScaleDownDelaySeconds) return;
    const victim = live[live.length - 1];
    if (victim) victim.removedAt = t;
    this.spareSince = t;
  }

  /** GPUs on ready nodes at `t` (what the node group's status.gpuCapacity says). */
  readyGpus(t: number): number {
    return this.live().filter((n) => n.readyAt <= t).length * this.cfg.gpusPerNode;
  }

  finish(t: number): void {
    this.end = t;
  }

  gpuSeconds(): number {
    return this.nodes.reduce((s, n) => s + ((n.removedAt ?? this.end) - n.requestedAt) * this.cfg.gpusPerNode, 0);
  }
}
