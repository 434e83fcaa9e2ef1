// What the scale benchmark waits for, read as an admin (not counted against the operator):
// every pool and Model Ready, every Deployment rolled out, nothing of the fleet left.
import { setTimeout as sleep } from "node:timers/promises";
import type { V1Deployment } from "@kubernetes/client-node";
import type { KubeClient } from "../../lib/kube/client.ts";
import { R } from "../../lib/kube/resources.ts";
import type { KubeObject } from "../../lib/kube/types.ts";

type WithConditions = KubeObject & { status?: { conditions?: Array<{ type: string; status: string }>; readyReplicas?: number } };

function ready(o: WithConditions): boolean {
  return o.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;
}

/** Waits (polling every 2 s) until `done` holds; returns when it first did. */
export async function waitFor(what: string, done: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await done()) return Date.now();
    await sleep(2000);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Counts of Models and pools in the namespace, and how many of them are Ready. */
export async function readiness(admin: KubeClient, namespace: string): Promise<{ total: number; ready: number }> {
  const lists = await Promise.all([R.Model, R.PrefillPool, R.DecodePool].map((r) => admin.list<WithConditions>(r, { namespace })));
  const all = lists.flatMap((l) => l.items);
  return { total: all.length, ready: all.filter(ready).length };
}

export async function allReady(admin: KubeClient, namespace: string, expected: number): Promise<boolean> {
  const r = await readiness(admin, namespace);
  return r.total === expected && r.ready === expected;
}

function rolledOut(d: V1Deployment): boolean {
  const s = d.status ?? {};
  const want = d.spec?.replicas ?? 1;
  const observed = (d.metadata?.generation ?? 0) <= (s.observedGeneration ?? 0);
  return observed && s.updatedReplicas === want && s.readyReplicas === want && s.replicas === want;
}

/** Every Deployment of the namespace rolled out to its replicas, and at least `expected` of them. */
export async function allRolledOut(admin: KubeClient, namespace: string, expected: number): Promise<boolean> {
  const { items } = await admin.list<V1Deployment>(R.Deployment, { namespace });
  return items.length >= expected && items.every(rolledOut);
}

/** Nothing left of the fleet: no Model, pool or Deployment in the namespace. */
export async function allGone(admin: KubeClient, namespace: string): Promise<boolean> {
  const lists = await Promise.all([R.Model, R.PrefillPool, R.DecodePool, R.Deployment].map((r) => admin.list(r, { namespace })));
  return lists.every((l) => l.items.length === 0);
}

/** The readyReplicas of one pool. */
export async function poolReadyReplicas(admin: KubeClient, namespace: string, name: string): Promise<number> {
  const pool = await admin.get<WithConditions>(R.PrefillPool, namespace, name);
  return pool.status?.readyReplicas ?? 0;
}

type PoolStatus = KubeObject & { status?: Record<string, unknown> };

/** A status as "path=value" leaves (conditions by type), so two can be compared field by field. */
function leaves(v: unknown, path: string, out: Map<string, string>): Map<string, string> {
  if (Array.isArray(v) && v.every((c) => typeof (c as { type?: unknown }).type === "string")) {
    for (const c of v as Array<{ type: string }>) leaves(c, `${path}[${c.type}]`, out);
  } else if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) leaves(x, path ? `${path}.${k}` : k, out);
  } else out.set(path, JSON.stringify(v));
  return out;
}

/** Each pool's status as leaves, by kind/name: what an idle minute's status writes changed. */
export async function poolStatusDigest(admin: KubeClient, namespace: string): Promise<Map<string, Map<string, string>>> {
  const out = new Map<string, Map<string, string>>();
  for (const r of [R.PrefillPool, R.DecodePool]) {
    for (const p of (await admin.list<PoolStatus>(r, { namespace })).items) out.set(`${r.kind}/${p.metadata?.name ?? ""}`, leaves(p.status ?? {}, "", new Map()));
  }
  return out;
}

/** The pools whose status differs between two digests, with the fields that changed ("field: before → after"), and how many. */
export function digestChanges(before: Map<string, Map<string, string>>, after: Map<string, Map<string, string>>): { changed: number; fields: Record<string, number>; examples: string[] } {
  const fields: Record<string, number> = {};
  const examples: string[] = [];
  let changed = 0;
  for (const [pool, now] of after) {
    const was = before.get(pool) ?? new Map<string, string>();
    const diff = [...new Set([...was.keys(), ...now.keys()])].filter((k) => was.get(k) !== now.get(k));
    if (diff.length === 0) continue;
    changed++;
    for (const k of diff) fields[k] = (fields[k] ?? 0) + 1;
    if (examples.length < 10) examples.push(`${pool}: ${diff.map((k) => `${k}: ${was.get(k) ?? "-"} → ${now.get(k) ?? "-"}`).join("; ")}`);
  }
  return { changed, fields, examples };
}
