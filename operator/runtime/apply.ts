// The one typed server-side-apply path: children and status go through here with the field
// manager llmfleet/<controller>. Status is written only when it changed.
import { isNotFound, KubeApiError, type KubeClient } from "../../lib/kube/client.ts";
import { R, type ResourceType } from "../../lib/kube/resources.ts";
import type { KubeObject } from "../../lib/kube/types.ts";

const CHILD_TYPES: Record<string, ResourceType> = {
  Deployment: R.Deployment,
  Service: R.Service,
  PodDisruptionBudget: R.PodDisruptionBudget,
  StatefulSet: R.StatefulSet,
  ServiceAccount: R.ServiceAccount,
  Role: R.Role,
  RoleBinding: R.RoleBinding,
  Job: R.Job,
  PersistentVolumeClaim: R.PersistentVolumeClaim,
};

export function fieldManager(controller: string): string {
  return `llmfleet/${controller}`;
}

export function childType(kind: string | undefined): ResourceType {
  const r = kind ? CHILD_TYPES[kind] : undefined;
  if (!r) throw new Error(`no child resource type for kind ${kind}`);
  return r;
}

/** Canonical JSON (sorted keys) so equal objects compare equal whatever their key order. */
export function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
    return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)));
  });
}

function childKey(o: KubeObject): string {
  return `${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name ?? ""}`;
}

/**
 * The version of an object's desired state as the API server keeps it: its generation where it has
 * one (it moves with every spec change, by anyone, and not with status), else its resourceVersion.
 * The uid is part of it, so an object deleted and created again is a new one.
 */
function specVersion(o: KubeObject): string {
  const m = o.metadata;
  return `${m?.uid ?? ""}/${m?.generation === undefined ? `rv${m?.resourceVersion ?? ""}` : `g${m.generation}`}`;
}

function hasAll(have: Record<string, string> | undefined, want: Record<string, string> | undefined): boolean {
  return Object.entries(want ?? {}).every(([k, v]) => have?.[k] === v);
}

/**
 * What this process last applied to each child, with the spec version the API server answered. A
 * child whose cached copy still has that version (nobody changed its spec since, not even the
 * object's deletion and re-creation) and our labels and annotations would come out of the same
 * apply unchanged: the apply is skipped. Without this every reconcile re-applies every child, and
 * a pool's status changing while its pods start costs three no-op applies each time. In memory: a
 * restarted operator applies each child once more. A cache that lags our own write only means
 * one more (no-op) apply.
 */
export class AppliedChildren {
  private readonly applied = new Map<string, { desired: string; version: string }>();

  /** Whether applying `desired` over `live` (the cached child) would change nothing. */
  upToDate(desired: KubeObject, live: KubeObject | undefined): boolean {
    if (!live) return false;
    const last = this.applied.get(childKey(desired));
    if (!last || last.desired !== canonical(desired) || last.version !== specVersion(live)) return false;
    return hasAll(live.metadata?.labels, desired.metadata?.labels) && hasAll(live.metadata?.annotations, desired.metadata?.annotations);
  }

  record(desired: KubeObject, answer: KubeObject): void {
    this.applied.set(childKey(desired), { desired: canonical(desired), version: specVersion(answer) });
  }

  forget(child: KubeObject): void {
    this.applied.delete(childKey(child));
  }
}

/**
 * Writes `patch` to the status subresource (server-side apply as `manager`) and tells the client's
 * onStatusWrite whether it changed the object `stored` (the cached copy the write was decided on):
 * a write that changes nothing leaves the resourceVersion as it was. A cache that lagged makes a
 * write look changed, never the other way round, so the unchanged count is a lower bound at worst.
 */
export async function applyStatus<T extends KubeObject>(client: KubeClient, w: { r: ResourceType; patch: T; manager: string; stored: KubeObject | undefined }): Promise<T> {
  const { r, patch, manager, stored } = w;
  const answer = await client.apply(r, patch, manager, "status");
  client.onStatusWrite?.({ resource: r.plural, changed: answer.metadata?.resourceVersion !== stored?.metadata?.resourceVersion });
  return answer;
}

/** Applies children and status for one controller, as llmfleet/<controller>. */
export class Applier {
  readonly manager: string;
  /** `applied`: shared by every pass of the process, so an unchanged child is not applied again. */
  constructor(
    private readonly client: KubeClient,
    controller: string,
    private readonly applied?: AppliedChildren,
  ) {
    this.manager = fieldManager(controller);
  }

  /**
   * Applies each child, except those `existing` (cached children) shows unchanged since this
   * process applied them. Concurrently, in waves, each after what it refers to: ServiceAccounts,
   * Roles, Services, budgets, claims; then RoleBindings (the API server checks a binding against
   * its Role, so a binding sent beside its Role can fail with 404, and a Role refused with 403
   * would be hidden behind its binding's 404); then the workloads. A pass takes about three round
   * trips however many children it has.
   */
  async children(children: KubeObject[], existing: KubeObject[] = []): Promise<void> {
    const live = new Map(existing.map((o) => [childKey(o), o]));
    const stale = children.filter((c) => !this.applied?.upToDate(c, live.get(childKey(c))));
    const wave = (c: KubeObject): number => (c.kind === "Deployment" || c.kind === "StatefulSet" || c.kind === "Job" ? 2 : c.kind === "RoleBinding" ? 1 : 0);
    for (const w of [0, 1, 2]) await Promise.all(stale.filter((c) => wave(c) === w).map((c) => this.applyChild(c)));
  }

  private async applyChild(child: KubeObject): Promise<void> {
    const answer = await this.client.apply(childType(child.kind), child, this.manager).catch((err: unknown) => {
      throw grantHint(child, err);
    });
    this.applied?.record(child, answer);
  }

  /** Deletes children this owner had that the plan no longer contains (e.g. aggregated replicas removed). */
  async prune(existing: KubeObject[], planned: KubeObject[]): Promise<void> {
    const keep = new Set(planned.map((c) => `${c.kind}/${c.metadata?.name}`));
    for (const child of existing) {
      if (keep.has(`${child.kind}/${child.metadata?.name}`)) continue;
      this.applied?.forget(child);
      await this.client.delete(childType(child.kind), child.metadata?.namespace, child.metadata?.name ?? "").catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
  }

  /** Writes status through the status subresource, only when it differs from what is stored (its own fields of it). */
  async status<S>(r: ResourceType, obj: KubeObject & { status?: S }, status: S): Promise<boolean> {
    if (canonical(stripUndefined(ownStatusView(obj, this.manager, status))) === canonical(stripUndefined(status))) return false;
    const patch = { apiVersion: obj.apiVersion, kind: obj.kind, metadata: { name: obj.metadata?.name, namespace: obj.metadata?.namespace }, status };
    await applyStatus(this.client, { r, patch, manager: this.manager, stored: obj });
    return true;
  }
}

/**
 * The stored status as far as `manager` is concerned: the top-level fields it owns (from the
 * object's managedFields) and the ones it is about to write. Fields other managers write beside
 * it (the node-group actuator's status.actuation, the autoscaler's) would otherwise make every
 * comparison differ and every reconcile patch. Without managedFields, the whole stored status.
 */
export function ownStatusView(obj: KubeObject & { status?: unknown }, manager: string, next: unknown): unknown {
  const stored = (obj.status ?? {}) as Record<string, unknown>;
  const entry = obj.metadata?.managedFields?.find((f) => f.manager === manager && f.subresource === "status");
  const owned = (entry?.fieldsV1 as { "f:status"?: Record<string, unknown> } | undefined)?.["f:status"];
  if (!owned) return stored;
  const keys = new Set([...Object.keys(owned).map((k) => k.replace(/^f:/, "")), ...Object.keys((next ?? {}) as object)]);
  const view = Object.fromEntries(Object.entries(stored).filter(([k]) => keys.has(k)));
  if (Array.isArray(view.conditions)) view.conditions = ownConditions(view.conditions as Condition[], owned["f:conditions"], next);
  return view;
}

type Condition = { type?: string };

/**
 * conditions is a list map keyed by type, so managers own single entries (managedFields key
 * `k:{"type":"Ready"}`): the view keeps the entries this manager owns or writes. Without such keys
 * it keeps them all.
 */
function ownConditions(stored: Condition[], owned: unknown, next: unknown): Condition[] {
  const keys = Object.keys((owned ?? {}) as object).filter((k) => k.startsWith("k:"));
  if (keys.length === 0) return stored;
  const types = new Set(keys.map((k) => (JSON.parse(k.slice(2)) as Condition).type));
  for (const c of ((next ?? {}) as { conditions?: Condition[] }).conditions ?? []) types.add(c.type);
  return stored.filter((c) => types.has(c.type));
}

function stripUndefined(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v)) as unknown;
}

/**
 * A router Role that reads tenant key Secrets is refused when the operator may not read Secrets in
 * that namespace itself (RBAC grants only what the granter holds): say which chart value grants it.
 */
function grantHint(child: KubeObject, err: unknown): unknown {
  const readsSecrets = child.kind === "Role" && ((child as { rules?: Array<{ resources?: string[] }> }).rules ?? []).some((r) => r.resources?.includes("secrets"));
  if (!(err instanceof KubeApiError) || err.status !== 403 || !readsSecrets) return err;
  return new Error(
    `${err.message} — the operator may read Secrets only in the namespaces of the chart value tenantKeys.namespaces, and a Model with spec.access needs it there to grant its router read on the tenants' key Secrets (docs/security.md)`,
    { cause: err },
  );
}
