/**
 * `--tier name=ram,medium=memory,capacity=4Gi` and friends: the KVStore's tiers as the operator
 * plans them (operator/plan/kvstore.ts `tierArg`), in lookup order.
 */
export type TierMedium = "memory" | "disk" | "objectStore";

export interface TierSpec {
  name: string;
  medium: TierMedium;
  /** Bytes the tier may hold; default: unbounded (object store) or required (memory, disk). */
  capacityBytes: number | undefined;
  /** Entries older than this are misses and get deleted; default: no expiry. */
  ttlMs: number | undefined;
  /** Disk: directory of the entries. */
  path?: string;
  /** Object store: endpoint URL, bucket and region (default us-east-1). */
  endpoint?: string;
  bucket?: string;
  region?: string;
}

const UNITS: Record<string, number> = {
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};

/** Kubernetes quantity (4Gi, 1Ti, 500M, 1048576) to bytes. */
export function parseBytes(q: string): number {
  const m = /^(\d+(?:\.\d+)?)([kMGT]i?|Ki)?$/.exec(q.trim());
  const unit = m ? UNITS[m[2] ?? ""] : undefined;
  if (!m || unit === undefined) throw new Error(`not a byte quantity: ${q}`);
  return Math.floor(Number(m[1]) * unit);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 };

/** Go-style duration (168h, 90m, 30s, 1h30m) or days (7d) to milliseconds. */
export function parseDurationMs(d: string): number {
  const parts = [...d.trim().matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== d.trim()) throw new Error(`not a duration: ${d}`);
  return parts.reduce((ms, p) => ms + Number(p[1]) * DURATION_UNITS[p[2]!]!, 0);
}

const MEDIA = new Set<TierMedium>(["memory", "disk", "objectStore"]);

function fields(arg: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of arg.split(",")) {
    const eq = part.indexOf("=");
    if (eq < 1) throw new Error(`--tier ${arg}: expected key=value pairs, got "${part}"`);
    out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

function checkTier(t: TierSpec, arg: string): TierSpec {
  if (!MEDIA.has(t.medium)) throw new Error(`--tier ${arg}: medium must be memory, disk or objectStore`);
  if (t.medium !== "objectStore" && t.capacityBytes === undefined) throw new Error(`--tier ${arg}: a ${t.medium} tier needs capacity=`);
  if (t.medium === "disk" && !t.path) throw new Error(`--tier ${arg}: a disk tier needs path=`);
  if (t.medium === "objectStore" && !(t.endpoint && t.bucket)) throw new Error(`--tier ${arg}: an objectStore tier needs endpoint= and bucket=`);
  return t;
}

export function parseTierSpec(arg: string): TierSpec {
  const f = fields(arg);
  if (!f.name) throw new Error(`--tier ${arg}: name= is required`);
  const spec: TierSpec = {
    name: f.name,
    medium: f.medium as TierMedium,
    capacityBytes: f.capacity === undefined ? undefined : parseBytes(f.capacity),
    ttlMs: f.ttl === undefined ? undefined : parseDurationMs(f.ttl),
    ...(f.path ? { path: f.path } : {}),
    ...(f.endpoint ? { endpoint: f.endpoint.replace(/\/+$/, "") } : {}),
    ...(f.bucket ? { bucket: f.bucket } : {}),
    region: f.region ?? "us-east-1",
  };
  return checkTier(spec, arg);
}
