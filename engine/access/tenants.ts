/**
 * Tenants and their API keys, as the router holds them. A key is never kept as given: only its
 * SHA-256, and a presented key is hashed and compared with every stored hash in constant time
 * (crypto.timingSafeEqual, no early exit), so neither the answer's timing nor a memory dump
 * gives a key away. Keys are replaced per tenant while the router serves (a watched file or
 * Secret): a revoked key stops working at the next request after the replacement.
 */
import { createHash, timingSafeEqual } from "node:crypto";

/** A tenant's limits; each one unset means unlimited. Per minute, over the whole fleet. */
export interface TenantLimits {
  requestsPerMinute?: number;
  /** Prompt + completion tokens. */
  tokensPerMinute?: number;
  concurrentStreams?: number;
}

export interface TenantSpec {
  /** A DNS-1123 label: it names the tenant in metrics and derives its KV namespace. */
  name: string;
  limits: TenantLimits;
  /**
   * KV prefix namespace the tenant shares with the other tenants that name the same one (an
   * explicit opt-in, e.g. for a common system prompt). Default: the tenant's own (its name).
   */
  sharedPrefixNamespace?: string;
}

export interface Tenant extends TenantSpec {
  /** What KV keys, the in-pod prefix cache and prefix-aware routing are scoped by. */
  kvNamespace: string;
}

export const TENANT_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** The KV namespace of a tenant: its own name, or the shared one it opted into ("shared:" keeps the two apart). */
export function kvNamespaceOf(spec: TenantSpec): string {
  return spec.sharedPrefixNamespace ? `shared:${spec.sharedPrefixNamespace}` : `tenant:${spec.name}`;
}

const hashKey = (key: string): Buffer => createHash("sha256").update(key, "utf8").digest();

/** Shortest key accepted: a key anyone can guess is no key. */
export const MIN_KEY_LENGTH = 16;

export class TenantKeyring {
  private tenants = new Map<string, Tenant>();
  private hashes: Array<{ hash: Buffer; tenant: string }> = [];

  /** Replaces the tenants (limits, namespaces); keys of tenants no longer listed are dropped. */
  setTenants(specs: readonly TenantSpec[]): void {
    this.tenants = new Map(specs.map((s) => [s.name, { ...s, kvNamespace: kvNamespaceOf(s) }]));
    this.hashes = this.hashes.filter((h) => this.tenants.has(h.tenant));
  }

  /** Replaces one tenant's keys (rotation adds the new key, revocation leaves the old one out). */
  setKeys(tenant: string, keys: readonly string[]): void {
    const kept = this.hashes.filter((h) => h.tenant !== tenant);
    const usable = keys.map((k) => k.trim()).filter((k) => k.length >= MIN_KEY_LENGTH);
    this.hashes = [...kept, ...usable.map((k) => ({ hash: hashKey(k), tenant }))];
  }

  get size(): number {
    return this.tenants.size;
  }

  tenant(name: string): Tenant | undefined {
    return this.tenants.get(name);
  }

  list(): Tenant[] {
    return [...this.tenants.values()];
  }

  keyCount(tenant: string): number {
    return this.hashes.filter((h) => h.tenant === tenant).length;
  }

  /** The tenant a presented key belongs to, or undefined. Every stored hash is compared. */
  authenticate(key: string): Tenant | undefined {
    const presented = hashKey(key);
    let match: string | undefined;
    for (const { hash, tenant } of this.hashes) {
      if (timingSafeEqual(hash, presented) && match === undefined) match = tenant;
    }
    return match === undefined ? undefined : this.tenants.get(match);
  }
}

/** The key of an `Authorization: Bearer <key>` header, or undefined. */
export function bearerKey(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return m?.[1];
}
