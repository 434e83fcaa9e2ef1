/**
 * The engine pods' guard (prefill, decode, aggregated, kvstore): with a fleet token configured
 * (--fleet-token-file, mounted from the fleet's Secret), every request but the probes and the
 * scrape (/health, /ready, /metrics) must carry it, compared in constant time; a request without
 * it is refused with 403 before its body is read. Only then are the tenant headers believed.
 * Without a fleet token (a local fleet, open mode) the headers are taken as they come: anyone who
 * reaches the pod can name any KV namespace, which is why main.ts says so at start.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import type { RequestHandler } from "express";
import { HttpError } from "../http/http-error.ts";
import { FLEET_TOKEN_HEADER, KV_NAMESPACE_HEADER, TENANT_HEADER, type RequestIdentity } from "./identity.ts";

/** Paths every pod answers without the token: kubelet probes, Prometheus and the operator's autoscaler. */
export const OPEN_PATHS: ReadonlySet<string> = new Set(["/health", "/ready", "/metrics"]);

/** Longest identity header accepted: names are DNS labels, namespaces a prefix and a label. */
const MAX_IDENTITY_CHARS = 128;

const digest = (s: string): Buffer => createHash("sha256").update(s, "utf8").digest();

/** Constant-time equality of two secrets of any length (compares their digests). */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * The fleet tokens in a file (a mounted Secret key): one a line, blank lines ignored. The first is
 * the one this pod sends; every one is accepted. Two lines are how a token rotates without a
 * restart and without a refused request (docs/security.md): add the new token as a second line,
 * then, once every pod has it, leave only the new one.
 */
export function readFleetTokens(path: string): string[] {
  const tokens = readFileSync(path, "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  if (tokens.length === 0) throw new Error(`--fleet-token-file ${path}: the file holds no token`);
  for (const [i, t] of tokens.entries())
    if (t.length < 16) throw new Error(`--fleet-token-file ${path}: token ${i + 1} must have at least 16 characters`);
  return tokens;
}

function header(value: string | string[] | undefined, name: string): string {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return "";
  if (v.length > MAX_IDENTITY_CHARS || !/^[a-z0-9:.-]*$/.test(v))
    throw new HttpError(400, `${name} must be a tenant name or KV namespace`, { code: "bad_identity" });
  return v;
}

/** What a guard checks against and a sender sends; both are read per request, so rotation needs no restart. */
export interface FleetTokens {
  /** The token to send; `undefined`: no token configured (open). */
  token: () => string | undefined;
  /** Whether a token received is one of the fleet's (also the previous ones, for their grace period). */
  accepts: (got: string) => boolean;
}

/** A fixed token (tests, a local fleet). */
export function fixedFleetToken(token: string | undefined): FleetTokens {
  return { token: () => token, accepts: (got) => token !== undefined && sameSecret(got, token) };
}

/** Refuses with 403, before the body is read, every request but the probes that lacks an accepted fleet token. */
export function fleetGuard(tokens: FleetTokens): RequestHandler {
  return (req, res, next) => {
    if (OPEN_PATHS.has(req.path)) return next();
    if (tokens.token() !== undefined) {
      const got = req.headers[FLEET_TOKEN_HEADER];
      if (typeof got !== "string" || !tokens.accepts(got)) {
        // The connection is not kept for another try: a prober gets one answer per connection.
        res.set("Connection", "close");
        return next(new HttpError(403, "this engine pod serves only its fleet's router and pods (no valid fleet token)", { type: "permission_error", code: "fleet_token_required" }));
      }
    }
    const identity: RequestIdentity = { tenant: header(req.headers[TENANT_HEADER], TENANT_HEADER), kvNamespace: header(req.headers[KV_NAMESPACE_HEADER], KV_NAMESPACE_HEADER) };
    res.locals.identity = identity;
    next();
  };
}

export interface FleetTokenSource extends FleetTokens, Disposable {}

export interface FleetTokenSourceOptions {
  log?: (line: string) => void;
  /** How often the file is read again. Default 2000 ms. */
  pollMs?: number;
  /** How long a token that left the file is still accepted: pods see a Secret's update at different times. Default 300 s. */
  graceMs?: number;
  now?: () => number;
}

/**
 * The tokens of `path`, re-read every `pollMs` (a Secret volume is updated in place, by a symlink
 * swap; polling sees it where a file watch may not). A token that leaves the file stays accepted
 * for `graceMs`, so a pod that still sends it (its volume not yet updated) is not refused. An
 * unreadable or invalid file keeps the last tokens read. None without a path: open.
 */
export function fleetTokenSource(path: string | undefined, opts: FleetTokenSourceOptions = {}): FleetTokenSource {
  if (!path) return { ...fixedFleetToken(undefined), [Symbol.dispose]: () => undefined };
  const log = opts.log ?? ((): void => undefined);
  const now = opts.now ?? Date.now;
  const graceMs = opts.graceMs ?? 300_000;
  let current = readFleetTokens(path);
  /** Tokens no longer in the file, with when they stop being accepted. */
  let retired: Array<{ token: string; until: number }> = [];
  const reload = (): void => {
    let next: string[];
    try {
      next = readFleetTokens(path);
    } catch (err) {
      log(`fleet token: ${(err as Error).message}; keeping the last one read`);
      return;
    }
    const t = now();
    const left = current.filter((old) => !next.includes(old)).map((token) => ({ token, until: t + graceMs }));
    if (left.length > 0 || next.length !== current.length || next[0] !== current[0]) log(`fleet token: the token file changed (${next.length} token(s); ${left.length} retired, accepted ${graceMs / 1000} s more)`);
    retired = [...retired.filter((r) => r.until > t && !next.includes(r.token)), ...left];
    current = next;
  };
  const interval = setInterval(reload, opts.pollMs ?? 2_000);
  interval.unref();
  return {
    token: () => current[0],
    accepts: (got) => {
      const t = now();
      // Every candidate is compared (no early exit): the time taken says nothing about which matched.
      let ok = false;
      for (const c of current) ok = sameSecret(got, c) || ok;
      for (const r of retired) ok = (sameSecret(got, r.token) && r.until > t) || ok;
      return ok;
    },
    [Symbol.dispose]: () => clearInterval(interval),
  };
}
