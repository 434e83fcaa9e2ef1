// A small typed REST client over the kubeconfig: get, list, watch, server-side apply, delete, evict.
// We use node's https directly (KubeConfig supplies CA, client certs and tokens) because watches
// need a long-lived streaming response and apply needs exact control of query and content type.
import https from "node:https";
import http from "node:http";
import { KubeConfig } from "@kubernetes/client-node";
import { collectionPath, objectPath, R, type ResourceType } from "./resources.ts";
import type { KubeObject } from "./types.ts";

export interface Status {
  kind?: string;
  code?: number;
  reason?: string;
  message?: string;
  details?: { causes?: Array<{ reason?: string; message?: string }> };
}

/** A non-2xx answer from the API server, with its Status reason (NotFound, Conflict, Invalid, Forbidden...). */
export class KubeApiError extends Error {
  readonly status: number;
  readonly reason: string;
  /** The Status's message and the messages of its causes (a refused eviction names the budget there). */
  readonly detail: string;
  constructor(status: number, body: Status | undefined, what: string) {
    super(`${what}: ${status} ${body?.reason ?? ""} ${body?.message ?? ""}`.trim());
    this.name = "KubeApiError";
    this.status = status;
    this.reason = body?.reason ?? "";
    this.detail = statusDetail(body);
  }
}

/** A request that got no whole answer within the client's request timeout. */
export class KubeTimeoutError extends Error {
  constructor(what: string, server: string, ms: number) {
    super(`${what}: no answer from the API server ${server} within ${ms} ms`);
    this.name = "KubeTimeoutError";
  }
}

/** Longest wait for a whole answer to a request (watches excepted: their stall detector is the informer's). Default 30 s. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

function statusDetail(body: Status | undefined): string {
  const causes = (body?.details?.causes ?? []).map((c) => c.message ?? "");
  return [body?.message ?? "", ...causes].filter((m) => m !== "").join("; ");
}

export function isNotFound(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 404;
}
export function isConflict(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 409;
}
/** For `.catch(ignoreNotFound)` where an object already gone is as good as deleted. */
export function ignoreNotFound(err: unknown): void {
  if (!isNotFound(err)) throw err;
}
/** 429: what the eviction subresource answers when a PodDisruptionBudget refuses (also API throttling). */
export function isTooManyRequests(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 429;
}

export interface ListResult<T> {
  items: T[];
  resourceVersion: string;
}

interface RequestOptions {
  method: string;
  path: string;
  query?: Record<string, string | undefined>;
  body?: unknown;
  contentType?: string;
  /** A watch: fail when the answer's headers have not come within this (its body may last for minutes). */
  headersTimeoutMs?: number;
}

/** What a request does, in the API server's terms: verb (get, list, watch, create, update, apply for server-side apply, patch, delete) and resource. */
export interface RequestKind {
  verb: string;
  resource: string;
  subresource: string;
}

function requestVerb(method: string, named: boolean, watch: boolean, contentType: string | undefined): string {
  if (method === "GET") return named ? "get" : watch ? "watch" : "list";
  if (method === "PATCH") return contentType === "application/apply-patch+yaml" ? "apply" : "patch";
  const verbs: Record<string, string> = { POST: "create", PUT: "update", DELETE: "delete" };
  return verbs[method] ?? method.toLowerCase();
}

/** The verb and resource of a request from its method and path ("/api/v1/namespaces/ns/pods/p/eviction"). */
export function requestKind(method: string, path: string, query: Record<string, string | undefined> = {}, contentType?: string): RequestKind {
  const parts = path.split("/").filter((p) => p !== "");
  let rest = parts[0] === "api" ? parts.slice(2) : parts.slice(3);
  if (rest[0] === "namespaces" && rest.length >= 3) rest = rest.slice(2);
  const [resource = "", name, subresource = ""] = rest;
  return { verb: requestVerb(method, name !== undefined, query.watch !== undefined, contentType), resource, subresource };
}

export class KubeClient {
  readonly server: string;
  /** Called once per request sent (watches included), e.g. to count them by verb and resource. */
  onRequest: ((kind: RequestKind) => void) | undefined;
  /**
   * Called after each status write that went through applyStatus (operator/runtime/apply.ts), with
   * whether it changed the object: e.g. to count writes that changed nothing.
   */
  onStatusWrite: ((w: { resource: string; changed: boolean }) => void) | undefined;
  private constructor(
    private readonly kc: KubeConfig,
    server: string,
    /** Every request but a watch fails with KubeTimeoutError after this many ms. */
    readonly requestTimeoutMs: number,
  ) {
    this.server = server;
  }

  static fromKubeConfig(kc: KubeConfig, opts: { requestTimeoutMs?: number } = {}): KubeClient {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig has no current cluster");
    return new KubeClient(kc, cluster.server, opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
  }

  /** Loads $KUBECONFIG, ~/.kube/config, or the in-cluster service account. */
  static fromDefault(): KubeClient {
    const kc = new KubeConfig();
    kc.loadFromDefault();
    return KubeClient.fromKubeConfig(kc);
  }

  async get<T extends KubeObject>(r: ResourceType, namespace: string | undefined, name: string, subresource?: string): Promise<T> {
    return this.json<T>({ method: "GET", path: objectPath(r, namespace, name, subresource) });
  }

  /** Lists `r` (all namespaces when `namespace` is unset), filtered server-side by the selectors, e.g. fieldSelector "spec.nodeName=n1". */
  async list<T extends KubeObject>(r: ResourceType, opts: { namespace?: string; labelSelector?: string; fieldSelector?: string } = {}): Promise<ListResult<T>> {
    const res = await this.json<{ items: T[]; metadata: { resourceVersion: string } }>({
      method: "GET",
      path: collectionPath(r, opts.namespace),
      query: { labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector },
    });
    const apiVersion = r.group === "" ? r.version : `${r.group}/${r.version}`;
    const items = res.items.map((i) => ({ ...i, apiVersion, kind: r.kind }));
    return { items, resourceVersion: res.metadata.resourceVersion };
  }

  /**
   * Lists `r` page by page (`limit` objects each, the pages of one consistent snapshot), so a large
   * collection is never one response body and all its objects in memory at once. Yields each page
   * with the list's resourceVersion; an expired continue token fails with 410.
   */
  async *listPages<T extends KubeObject>(r: ResourceType, opts: { namespace?: string; labelSelector?: string; fieldSelector?: string; limit: number }): AsyncGenerator<ListResult<T>> {
    const apiVersion = r.group === "" ? r.version : `${r.group}/${r.version}`;
    let cont: string | undefined;
    do {
      const res = await this.json<{ items: T[]; metadata: { resourceVersion: string; continue?: string } }>({
        method: "GET",
        path: collectionPath(r, opts.namespace),
        query: { labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector, limit: String(opts.limit), continue: cont },
      });
      yield { items: res.items.map((i) => ({ ...i, apiVersion, kind: r.kind })), resourceVersion: res.metadata.resourceVersion };
      cont = res.metadata.continue || undefined;
    } while (cont);
  }

  /**
   * Server-side apply with our field manager. `force` takes ownership of conflicting fields, which
   * is how drift (a child edited by someone else) is repaired. Unknown fields are an error, not pruned.
   */
  async apply<T extends KubeObject>(r: ResourceType, obj: T, fieldManager: string, subresource?: string): Promise<T> {
    const name = obj.metadata?.name;
    if (!name) throw new Error(`apply ${r.kind}: metadata.name is required`);
    return this.json<T>({
      method: "PATCH",
      path: objectPath(r, obj.metadata?.namespace, name, subresource),
      query: { fieldManager, force: "true", fieldValidation: "Strict" },
      body: obj,
      contentType: "application/apply-patch+yaml",
    });
  }

  async create<T extends KubeObject>(r: ResourceType, obj: T, fieldManager: string): Promise<T> {
    return this.json<T>({ method: "POST", path: collectionPath(r, obj.metadata?.namespace), query: { fieldManager }, body: obj });
  }

  async replace<T extends KubeObject>(r: ResourceType, obj: T, fieldManager: string, subresource?: string): Promise<T> {
    const name = obj.metadata?.name ?? "";
    return this.json<T>({ method: "PUT", path: objectPath(r, obj.metadata?.namespace, name, subresource), query: { fieldManager }, body: obj });
  }

  async mergePatch<T extends KubeObject>(r: ResourceType, target: { namespace?: string; name: string; subresource?: string }, patch: unknown): Promise<T> {
    const path = objectPath(r, target.namespace, target.name, target.subresource);
    return this.json<T>({ method: "PATCH", path, body: patch, contentType: "application/merge-patch+json" });
  }

  async delete(r: ResourceType, namespace: string | undefined, name: string): Promise<void> {
    await this.json({ method: "DELETE", path: objectPath(r, namespace, name), body: { propagationPolicy: "Background" } });
  }

  /**
   * Evicts a pod through its policy/v1 Eviction subresource: the API server deletes it only if
   * every PodDisruptionBudget covering it allows, and answers 429 (isTooManyRequests) otherwise.
   * With `uid`, only that incarnation of the pod is evicted (409 if the name now holds another).
   */
  async evict(namespace: string, name: string, uid?: string): Promise<void> {
    const eviction = {
      apiVersion: "policy/v1",
      kind: "Eviction",
      metadata: { name, namespace },
      ...(uid ? { deleteOptions: { preconditions: { uid } } } : {}),
    };
    await this.json({ method: "POST", path: objectPath(R.Pod, namespace, name, "eviction"), body: eviction });
  }

  /** Opens a watch stream; the caller reads newline-delimited JSON events from the response. */
  async openWatch(
    r: ResourceType,
    opts: { namespace?: string; resourceVersion: string; timeoutSeconds: number; labelSelector?: string; fieldSelector?: string },
  ): Promise<http.IncomingMessage> {
    const query = {
      watch: "1",
      allowWatchBookmarks: "true",
      resourceVersion: opts.resourceVersion,
      timeoutSeconds: String(opts.timeoutSeconds),
      labelSelector: opts.labelSelector,
      fieldSelector: opts.fieldSelector,
    };
    const res = await this.send({ method: "GET", path: collectionPath(r, opts.namespace), query, headersTimeoutMs: this.requestTimeoutMs });
    if ((res.statusCode ?? 0) >= 300) {
      const body = await readBody(res);
      throw new KubeApiError(res.statusCode ?? 0, parseStatus(body), `watch ${r.plural}`);
    }
    return res;
  }

  private async json<T>(opts: RequestOptions): Promise<T> {
    const what = `${opts.method} ${opts.path}`;
    const signal = AbortSignal.timeout(this.requestTimeoutMs);
    let body: string;
    let res: http.IncomingMessage;
    try {
      res = await this.send(opts, signal);
      body = await readBody(res);
    } catch (err) {
      if (signal.aborted) throw new KubeTimeoutError(what, this.server, this.requestTimeoutMs);
      throw err;
    }
    const code = res.statusCode ?? 0;
    if (code < 200 || code >= 300) throw new KubeApiError(code, parseStatus(body), what);
    return (body.length > 0 ? JSON.parse(body) : {}) as T;
  }

  private async send(opts: RequestOptions, signal?: AbortSignal): Promise<http.IncomingMessage> {
    this.onRequest?.(requestKind(opts.method, opts.path, opts.query, opts.contentType));
    const url = new URL(this.server + opts.path);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const reqOpts: https.RequestOptions = { method: opts.method, headers: { Accept: "application/json" }, ...(signal ? { signal } : {}) };
    await this.kc.applyToHTTPSOptions(reqOpts);
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    if (payload !== undefined) reqOpts.headers = { ...reqOpts.headers, "Content-Type": opts.contentType ?? "application/json" };
    const transport = url.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = transport.request(url, reqOpts, (res) => {
        clearTimeout(timer);
        resolve(res);
      });
      const timer =
        opts.headersTimeoutMs === undefined
          ? undefined
          : setTimeout(() => req.destroy(new KubeTimeoutError(`${opts.method} ${opts.path}`, this.server, opts.headersTimeoutMs ?? 0)), opts.headersTimeoutMs);
      req.on("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.end(payload);
    });
  }
}

function readBody(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on("data", (c: Buffer) => chunks.push(c));
    res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    res.on("error", reject);
  });
}

function parseStatus(body: string): Status | undefined {
  try {
    return JSON.parse(body) as Status;
  } catch {
    return { message: body.slice(0, 500) };
  }
}
