/**
 * Where the router's tenants and keys come from, each kept current while the router serves:
 *
 * - `--access-file F` (npm start, a router outside Kubernetes): YAML or JSON, re-read when it
 *   changes (read each second), keys included:
 *     tenants:
 *       - name: team-a
 *         keys: ["sk-team-a-…"]                 # at least 16 characters each
 *         limits: {requestsPerMinute: 600, tokensPerMinute: 200000, concurrentStreams: 8}
 *         sharedPrefixNamespace: common          # optional opt-in to a shared KV prefix namespace
 *   A file that cannot be read or parsed leaves the tenants and keys in use as they are.
 * - In a cluster (the operator's router): the tenants and their limits come from the Model's
 *   spec.access as `--access-tenants JSON`; the keys from each tenant's Secret, watched through
 *   the Kubernetes API, as the router already watches EndpointSlices for its upstreams. Every
 *   value in the Secret's data is one API key: add an entry to rotate, remove one to revoke; the
 *   router applies the change when the watch delivers it (about a second), nothing restarts.
 *   A deleted Secret leaves its tenant with no key.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import type { KubeClient } from "../../lib/kube/client.ts";
import { Informer } from "../../lib/kube/informer.ts";
import { R } from "../../lib/kube/resources.ts";
import type { KubeObject } from "../../lib/kube/types.ts";
import { podURLs, serviceOf, type EndpointSlice } from "../router/endpoint-slices.ts";
import { MIN_KEY_LENGTH, TENANT_NAME, TenantKeyring, type TenantLimits, type TenantSpec } from "./tenants.ts";

export interface TenantSpecWithSecret extends TenantSpec {
  /** Secret (in the router's namespace) whose data values are the tenant's API keys. */
  secretName?: string;
}

const LIMIT_FIELDS = ["requestsPerMinute", "tokensPerMinute", "concurrentStreams"] as const;

function parseLimits(raw: unknown, where: string): TenantLimits {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== "object" || Array.isArray(raw)) throw new Error(`${where}.limits must be an object`);
  const limits: TenantLimits = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (!(LIMIT_FIELDS as readonly string[]).includes(k)) throw new Error(`${where}.limits.${k} is not a limit (${LIMIT_FIELDS.join(", ")})`);
    if (!Number.isInteger(v) || (v as number) < 1) throw new Error(`${where}.limits.${k} must be an integer >= 1`);
    limits[k as (typeof LIMIT_FIELDS)[number]] = v as number;
  }
  return limits;
}

function optionalLabel(v: unknown, where: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !TENANT_NAME.test(v)) throw new Error(`${where} must be a DNS-1123 label`);
  return v;
}

function parseKeys(keys: unknown, where: string): string[] | undefined {
  if (keys === undefined) return undefined;
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string" && k.length >= MIN_KEY_LENGTH))
    throw new Error(`${where}.keys must be a list of keys of at least ${MIN_KEY_LENGTH} characters`);
  return keys as string[];
}

function parseTenant(raw: unknown, i: number): TenantSpecWithSecret & { keys?: string[] } {
  const where = `tenants[${i}]`;
  const t = raw as Record<string, unknown> | null;
  if (!t || typeof t !== "object") throw new Error(`${where} must be an object`);
  const name = optionalLabel(t.name, `${where}.name`);
  if (name === undefined) throw new Error(`${where}.name is required`);
  const shared = optionalLabel(t.sharedPrefixNamespace, `${where}.sharedPrefixNamespace`);
  const secretName = t.secretName === undefined ? undefined : optionalLabel(t.secretName, `${where}.secretName`);
  const keys = parseKeys(t.keys, where);
  return {
    name,
    limits: parseLimits(t.limits, where),
    ...(shared ? { sharedPrefixNamespace: shared } : {}),
    ...(secretName ? { secretName } : {}),
    ...(keys ? { keys } : {}),
  };
}

/** Tenants of an access file or of --access-tenants (a JSON list, or an object with `tenants`). */
export function parseAccess(text: string): Array<TenantSpecWithSecret & { keys?: string[] }> {
  const doc = parseYaml(text) as unknown;
  const list = Array.isArray(doc) ? doc : (doc as { tenants?: unknown } | null)?.tenants;
  if (!Array.isArray(list)) throw new Error("expected a list of tenants (or {tenants: [...]})");
  const tenants = list.map(parseTenant);
  const names = new Set<string>();
  for (const t of tenants) {
    if (names.has(t.name)) throw new Error(`tenant ${t.name} is listed twice`);
    names.add(t.name);
  }
  return tenants;
}

export interface AccessSource extends Disposable {
  keyring: TenantKeyring;
}

/** The keyring of an access file, re-read when it changes. Throws when the first read fails. */
export function watchAccessFile(path: string, log: (line: string) => void, intervalMs = 1000): AccessSource {
  const keyring = new TenantKeyring();
  const apply = (tenants: ReturnType<typeof parseAccess>): void => {
    keyring.setTenants(tenants);
    for (const t of tenants) keyring.setKeys(t.name, t.keys ?? []);
  };
  let applied = readFileSync(path, "utf8");
  apply(parseAccess(applied));
  // Polled by content, not by fs.watchFile: its first stat is taken asynchronously, and a change
  // before it would never be seen. The file is small.
  const reload = (): void => {
    try {
      const text = readFileSync(path, "utf8");
      if (text === applied) return;
      applied = text;
      apply(parseAccess(text));
      log(`router: access file reloaded: ${keyring.size} tenant(s)`);
    } catch (err) {
      log(`router: access file ${path}: ${(err as Error).message}; keeping the tenants and keys in use`);
    }
  };
  const timer = setInterval(reload, intervalMs);
  timer.unref();
  return { keyring, [Symbol.dispose]: () => clearInterval(timer) };
}

interface Secret extends KubeObject {
  data?: Record<string, string>;
}

/** The API keys of a Secret: every data value, base64-decoded. */
export function secretKeys(secret: Secret | undefined): string[] {
  return Object.values(secret?.data ?? {}).map((v) => Buffer.from(v, "base64").toString("utf8").trim());
}

/** The keyring of --access-tenants, keys from each tenant's Secret in `namespace`, watched. */
export function watchAccessSecrets(client: KubeClient, namespace: string, tenants: TenantSpecWithSecret[], log: (line: string) => void): AccessSource & { synced: Promise<void> } {
  const keyring = new TenantKeyring();
  keyring.setTenants(tenants);
  const informers: Informer<Secret>[] = [];
  for (const t of tenants) {
    if (!t.secretName) continue;
    const informer = new Informer<Secret>(client, R.Secret, {
      namespace,
      fieldSelector: `metadata.name=${t.secretName}`,
      onError: (err) => log(`router: Secret ${namespace}/${t.secretName} of tenant ${t.name}: ${(err as Error).message}; keeping its keys`),
    });
    informer.on((type, obj) => {
      keyring.setKeys(t.name, type === "DELETED" ? [] : secretKeys(obj));
      log(`router: tenant ${t.name}: ${keyring.keyCount(t.name)} key(s) from Secret ${t.secretName}`);
    });
    informers.push(informer);
    void informer.run();
  }
  return {
    keyring,
    synced: Promise.all(informers.map((i) => i.waitForSync())).then(() => undefined),
    [Symbol.dispose]: () => informers.forEach((i) => i.stop()),
  };
}

/** Ready routers behind `serviceUrl` (at least 1), from its EndpointSlices: the limiter's share. */
export function watchRouterPeers(client: KubeClient, serviceUrl: string, log: (line: string) => void): { count: () => number } & Disposable {
  const ref = serviceOf(serviceUrl);
  if (!ref) throw new Error(`--router-service must be a Service URL (http://<svc>.<ns>.svc[:port]), got ${serviceUrl}`);
  const informer = new Informer<EndpointSlice>(client, R.EndpointSlice, {
    namespace: ref.namespace,
    labelSelector: `kubernetes.io/service-name=${ref.service}`,
    onError: (err) => log(`router: peers (${ref.service}): ${(err as Error).message}; keeping the last count`),
  });
  void informer.run();
  return { count: () => Math.max(1, podURLs(informer.list()).length), [Symbol.dispose]: () => informer.stop() };
}
