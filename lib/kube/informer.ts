// An informer: list, then watch from the list's resourceVersion, keeping a cache by key and
// telling handlers of each change. It runs under a supervisor: a watch that ends is resumed; an
// error restarts it after a backoff; 410 Gone (resourceVersion too old) relists. Without this a
// watch error would silently stop the informer (the failure the JS client is known for).
import type http from "node:http";
import { KubeApiError, type KubeClient } from "./client.ts";
import type { ResourceType } from "./resources.ts";
import { objectKey, type KubeObject } from "./types.ts";

export type EventType = "ADDED" | "MODIFIED" | "DELETED";
export type Handler<T> = (type: EventType, obj: T, old: T | undefined) => void;

export interface InformerOptions {
  namespace?: string;
  labelSelector?: string;
  /** e.g. metadata.name=X: one object by name (RBAC resourceNames admit list/watch only so). */
  fieldSelector?: string;
  /** Server-side watch timeout in s; the informer resumes after it. Default 300. */
  watchTimeoutSeconds?: number;
  /**
   * A watch that brings nothing (no event, no bookmark, no end) for this long is dropped and
   * restarted: a connection can die without closing, and the watch would wait forever. Default:
   * the server-side timeout plus 30 s, past which the server should have ended it.
   */
  stallMs?: number;
  /** Backoff after an error, ms: doubles up to maxBackoffMs. Defaults 500 and 30000. */
  backoffMs?: number;
  maxBackoffMs?: number;
  onError?: (err: unknown) => void;
  /**
   * Keep cached objects without metadata.managedFields: for caches of many objects whose field
   * ownership nobody reads (pods), where it is a good part of each object's size. Default false.
   */
  dropManagedFields?: boolean;
  /** Objects per page of a (re)list. Default 500. */
  pageSize?: number;
}

interface WatchEvent<T> {
  type: EventType | "BOOKMARK" | "ERROR";
  object: T & { code?: number; metadata?: { resourceVersion?: string } };
}

class GoneError extends Error {}

export class Informer<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private readonly handlers: Handler<T>[] = [];
  private resourceVersion = "";
  private synced = false;
  private stopped = false;
  private current: http.IncomingMessage | undefined;
  private syncWaiters: Array<() => void> = [];
  restarts = 0;

  constructor(
    private readonly client: KubeClient,
    readonly resource: ResourceType,
    private readonly opts: InformerOptions = {},
  ) {}

  on(handler: Handler<T>): void {
    this.handlers.push(handler);
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  hasSynced(): boolean {
    return this.synced;
  }

  waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  /** Runs until stop(); never rejects. */
  async run(): Promise<void> {
    const firstBackoff = this.opts.backoffMs ?? 500;
    let backoff = firstBackoff;
    let needList = true;
    while (!this.stopped) {
      try {
        if (needList) await this.relist();
        needList = false;
        await this.watchOnce();
        backoff = firstBackoff;
      } catch (err) {
        if (this.stopped) break;
        needList ||= isGone(err);
        await this.afterError(err, backoff);
        backoff = Math.min(backoff * 2, this.opts.maxBackoffMs ?? 30_000);
      }
    }
  }

  private async afterError(err: unknown, backoff: number): Promise<void> {
    this.restarts++;
    this.opts.onError?.(err);
    await sleep(backoff);
  }

  stop(): void {
    this.stopped = true;
    this.current?.destroy();
  }

  /**
   * Replaces the cache with a fresh list, emitting the differences as events. Page by page: the
   * whole list as one body (and its parsed objects beside the cache's) was the operator's memory
   * peak after a restart at a few thousand objects.
   */
  private async relist(): Promise<void> {
    const seen = new Set<string>();
    let resourceVersion = "";
    for await (const page of this.client.listPages<T>(this.resource, { ...this.opts, limit: this.opts.pageSize ?? 500 })) {
      resourceVersion = page.resourceVersion;
      for (const item of page.items) {
        seen.add(objectKey(item));
        this.store("ADDED", item);
      }
    }
    for (const [key, old] of [...this.cache]) {
      if (!seen.has(key)) {
        this.cache.delete(key);
        this.emit("DELETED", old, old);
      }
    }
    this.resourceVersion = resourceVersion;
    this.markSynced();
  }

  private markSynced(): void {
    if (this.synced) return;
    this.synced = true;
    for (const w of this.syncWaiters) w();
    this.syncWaiters = [];
  }

  private async watchOnce(): Promise<void> {
    const res = await this.client.openWatch(this.resource, {
      namespace: this.opts.namespace,
      labelSelector: this.opts.labelSelector,
      fieldSelector: this.opts.fieldSelector,
      resourceVersion: this.resourceVersion,
      timeoutSeconds: this.opts.watchTimeoutSeconds ?? 300,
    });
    this.current = res;
    const stallMs = this.opts.stallMs ?? ((this.opts.watchTimeoutSeconds ?? 300) + 30) * 1000;
    const stalled = (): void => void res.destroy(new Error(`watch ${this.resource.plural}: stalled, nothing for ${stallMs} ms`));
    let timer = setTimeout(stalled, stallMs);
    try {
      await this.readEvents(res, () => {
        clearTimeout(timer);
        timer = setTimeout(stalled, stallMs);
      });
    } finally {
      clearTimeout(timer);
    }
  }

  private async readEvents(res: http.IncomingMessage, alive: () => void): Promise<void> {
    let buffered = "";
    for await (const chunk of res) {
      alive();
      buffered += (chunk as Buffer).toString("utf8");
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line) this.handleEvent(JSON.parse(line) as WatchEvent<T>);
      }
    }
    if (this.stopped) return;
  }

  private handleEvent(ev: WatchEvent<T>): void {
    const rv = ev.object.metadata?.resourceVersion;
    if (ev.type === "ERROR") {
      if (ev.object.code === 410) throw new GoneError("watch: resourceVersion too old (410 Gone)");
      throw new Error(`watch ${this.resource.plural}: ${JSON.stringify(ev.object)}`);
    }
    if (rv) this.resourceVersion = rv;
    if (ev.type === "BOOKMARK") return;
    const obj = withTypeMeta(ev.object, this.resource);
    if (ev.type === "DELETED") {
      this.cache.delete(objectKey(obj));
      this.emit("DELETED", obj, obj);
      return;
    }
    this.store(ev.type, obj);
  }

  private store(type: EventType, received: T): void {
    const obj = this.opts.dropManagedFields && received.metadata?.managedFields ? { ...received, metadata: { ...received.metadata, managedFields: undefined } } : received;
    const key = objectKey(obj);
    const old = this.cache.get(key);
    if (old && old.metadata?.resourceVersion === obj.metadata?.resourceVersion) return;
    this.cache.set(key, obj);
    this.emit(old ? "MODIFIED" : type, obj, old);
  }

  private emit(type: EventType, obj: T, old: T | undefined): void {
    for (const h of this.handlers) h(type, obj, old);
  }
}

function withTypeMeta<T extends KubeObject>(obj: T, r: ResourceType): T {
  return { ...obj, apiVersion: r.group === "" ? r.version : `${r.group}/${r.version}`, kind: r.kind };
}

function isGone(err: unknown): boolean {
  return err instanceof GoneError || (err instanceof KubeApiError && err.status === 410);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
