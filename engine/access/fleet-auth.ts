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

/** The fleet token in a file (a mounted Secret key), trimmed; an empty file is an error. */
export function readFleetToken(path: string): string {
  const token = readFileSync(path, "utf8").trim();
  if (token.length < 16) throw new Error(`--fleet-token-file ${path}: the token must have at least 16 characters`);
  return token;
}

function header(value: string | string[] | undefined, name: string): string {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return "";
  if (v.length > MAX_IDENTITY_CHARS || !/^[a-z0-9:.-]*$/.test(v))
    throw new HttpError(400, `${name} must be a tenant name or KV namespace`, { code: "bad_identity" });
  return v;
}

/**
 * `token()` is read per request, so a rotated token file takes effect without a restart
 * (fleetTokenSource below). `undefined`: no token configured, open.
 */
export function fleetGuard(token: () => string | undefined): RequestHandler {
  return (req, res, next) => {
    if (OPEN_PATHS.has(req.path)) return next();
    const expected = token();
    if (expected !== undefined) {
      const got = req.headers[FLEET_TOKEN_HEADER];
      if (typeof got !== "string" || !sameSecret(got, expected)) {
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

export interface FleetTokenSource extends Disposable {
  token: () => string | undefined;
}

/** The token of `path`, re-read when the file changes (Secret volumes are updated in place); none without a path. */
export function fleetTokenSource(path: string | undefined, log: (line: string) => void = () => undefined): FleetTokenSource {
  if (!path) return { token: () => undefined, [Symbol.dispose]: () => undefined };
  let current = readFleetToken(path);
  const interval = setInterval(() => {
    try {
      current = readFleetToken(path);
    } catch (err) {
      log(`fleet token: ${(err as Error).message}; keeping the last one read`);
    }
  }, 5_000);
  interval.unref();
  return { token: () => current, [Symbol.dispose]: () => clearInterval(interval) };
}
