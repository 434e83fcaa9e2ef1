// The controller manager: informers under supervision feed one de-duplicating work queue of keys
// "<Kind>/<namespace>/<name>"; workers hand each key to its kind's reconciler. Reconcilers read
// only from the caches, so a burst of events for one object folds into one pass.
import type { KubeClient } from "../../lib/kube/client.ts";
import type { ResourceType } from "../../lib/kube/resources.ts";
import { objectKey, type KubeObject } from "../../lib/kube/types.ts";
import { InvalidSpecError } from "../plan/invalid-spec.ts";
import { EventRecorder } from "./events.ts";
import { Informer, type EventType, type InformerOptions } from "../../lib/kube/informer.ts";
import type { OperatorMetrics } from "./metrics.ts";
import { WorkQueue } from "./workqueue.ts";

export type Reconcile = (namespace: string, name: string) => Promise<void>;
/** One informer event as a mapper sees it: its type and the object's other version (the old one for `obj`, or the new one when `obj` is the old). */
export interface Change<T> {
  type: EventType;
  other?: T;
}
/** Maps a changed object to the keys that must be reconciled because of it. */
export type KeyMapper<T extends KubeObject> = (obj: T, change: Change<T>) => string[];

export function key(kind: string, namespace: string, name: string): string {
  return `${kind}/${namespace}/${name}`;
}

export function parseKey(k: string): { kind: string; namespace: string; name: string } {
  const [kind = "", namespace = "", name = ""] = k.split("/");
  return { kind, namespace, name };
}

export class Manager {
  readonly queue = new WorkQueue();
  private readonly informers: Informer<KubeObject>[] = [];
  private readonly reconcilers = new Map<string, Reconcile>();
  private running = false;
  log: (msg: string) => void = (msg) => console.log(msg);
  /** Kubernetes Events about the objects the operator manages; reconcilers and loops record through it. */
  readonly events: EventRecorder;

  /** `identity` is this replica's reportingInstance on Events. Default <hostname>-<pid>. */
  constructor(
    readonly client: KubeClient,
    private readonly metrics: OperatorMetrics,
    identity?: string,
  ) {
    this.events = new EventRecorder(client, {
      instance: identity,
      onError: (err, event, regarding) => {
        this.metrics.eventsDropped.inc({ reason: event.reason });
        this.log(`event ${event.reason} on ${regarding.kind} ${objectKey(regarding)} dropped: ${String(err)}`);
      },
    });
  }

  informer<T extends KubeObject>(r: ResourceType, mapper: KeyMapper<T>, opts: InformerOptions = {}): Informer<T> {
    const inf = new Informer<T>(this.client, r, {
      ...opts,
      onError: (err) => {
        this.metrics.informerRestarts.inc({ resource: r.plural });
        this.log(`informer ${r.plural}: ${String(err)}; restarting with backoff`);
      },
    });
    inf.on((type, obj, old) => {
      for (const k of mapper(obj, { type, other: old })) this.queue.add(k);
      if (old && old !== obj) for (const k of mapper(old, { type, other: obj })) this.queue.add(k);
      this.metrics.queueDepth.set(this.queue.length);
    });
    this.informers.push(inf as unknown as Informer<KubeObject>);
    return inf;
  }

  register(kind: string, reconcile: Reconcile): void {
    this.reconcilers.set(kind, reconcile);
  }

  hasSynced(): boolean {
    return this.informers.every((i) => i.hasSynced());
  }

  /** Starts informers (they run until stop) and resolves once every cache has synced. */
  async startInformers(): Promise<void> {
    for (const inf of this.informers) void inf.run();
    await Promise.all(this.informers.map((i) => i.waitForSync()));
  }

  /** Runs workers until stop(). */
  async runWorkers(count = 2): Promise<void> {
    this.running = true;
    await Promise.all(Array.from({ length: count }, () => this.worker()));
  }

  stop(): void {
    this.running = false;
    this.queue.shutdown();
    for (const inf of this.informers) inf.stop();
  }

  /**
   * Runs one pass of a loop outside the work queue (the node-group actuator's timer) and records
   * it as a reconcile of `controller`: its duration and result, and a failure in the errors.
   */
  async recordPass(controller: string, pass: () => Promise<void>): Promise<void> {
    const end = this.metrics.reconcileDuration.startTimer({ controller });
    try {
      await pass();
      end({ result: "ok" });
    } catch (err) {
      end({ result: "error" });
      this.metrics.reconcileErrors.inc({ controller, reason: errorReason(err) });
      throw err;
    }
  }

  private async worker(): Promise<void> {
    while (this.running) {
      const k = await this.queue.get();
      if (k === undefined) return;
      await this.process(k);
      this.queue.done(k);
      this.metrics.queueDepth.set(this.queue.length);
    }
  }

  private async process(k: string): Promise<void> {
    const { kind, namespace, name } = parseKey(k);
    const reconcile = this.reconcilers.get(kind);
    if (!reconcile) return;
    const controller = kind.toLowerCase();
    const end = this.metrics.reconcileDuration.startTimer({ controller });
    try {
      await reconcile(namespace, name);
      this.queue.forget(k);
      end({ result: "ok" });
    } catch (err) {
      const invalid = err instanceof InvalidSpecError;
      end({ result: invalid ? "invalid" : "error" });
      this.metrics.reconcileErrors.inc({ controller, reason: invalid ? "InvalidSpec" : errorReason(err) });
      if (invalid) this.terminal(k, err);
      else this.log(`reconcile ${k} failed, retrying in ${this.queue.addRateLimited(k)} ms: ${String(err)}`);
    }
  }

  /**
   * A spec that cannot be served (the reconciler has written why into status): not requeued, and
   * its backoff is reset, since only a change to the object or what it references can fix it.
   */
  private terminal(k: string, err: InvalidSpecError): void {
    this.queue.forget(k);
    this.log(`reconcile ${k}: invalid spec, not retried until it changes: ${err.message}`);
  }
}

function errorReason(err: unknown): string {
  const reason = (err as { reason?: unknown }).reason;
  return typeof reason === "string" && reason ? reason : "Error";
}
