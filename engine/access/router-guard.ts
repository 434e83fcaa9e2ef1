/**
 * The router's front door: `Authorization: Bearer <key>` names a tenant (401 in OpenAI's shape
 * otherwise), the tenant's limits admit the request (429 with Retry-After and the limit's name
 * otherwise), and the request goes upstream with the fleet token and the tenant's identity.
 * Runs before the body is parsed: a request without a valid key costs no JSON parse.
 * Open mode (no keyring): everyone is served as one anonymous tenant; main.ts says so loudly.
 * Keys and prompts are never logged, here or anywhere in the request path.
 */
import type { RequestHandler, Response } from "express";
import { HttpError } from "../http/http-error.ts";
import { OPEN_PATHS } from "./fleet-auth.ts";
import { ANONYMOUS, identityHeaders, type RequestIdentity, type TokenMeter } from "./identity.ts";
import { LimitExceeded, type Admission, type TenantLimiter } from "./limiter.ts";
import type { TenantMetrics } from "./tenant-metrics.ts";
import { bearerKey, type Tenant, type TenantKeyring } from "./tenants.ts";

export interface RouterGuardOptions {
  /** Tenants and keys; undefined: open mode. */
  keyring: TenantKeyring | undefined;
  limiter: TenantLimiter;
  /** The fleet token sent to engine pods; undefined when the engines have none. */
  fleetToken: () => string | undefined;
  metrics: TenantMetrics;
}

/** Router paths outside the OpenAI API: probes, the scrape, and the local driver's drain check. */
const ROUTER_OPEN_PATHS = new Set([...OPEN_PATHS, "/internal/upstreams"]);

function unauthorized(res: Response, message: string): HttpError {
  res.set("WWW-Authenticate", 'Bearer realm="llmfleet"');
  return new HttpError(401, message, { code: "invalid_api_key" });
}

function tooMany(err: LimitExceeded): HttpError {
  return new HttpError(429, `${err.message}; retry after ${err.retryAfterSeconds} s`, {
    type: "rate_limit_error",
    param: err.limit,
    code: "rate_limit_exceeded",
    headers: { "Retry-After": String(err.retryAfterSeconds), "x-llmfleet-limit": err.limit },
  });
}

function meter(tenant: string, admission: Admission, metrics: TenantMetrics): TokenMeter {
  const count = (kind: "prompt" | "completion", n: number): void => {
    if (!(n > 0)) return;
    admission.debitTokens(n);
    metrics.tokens.inc({ tenant, kind }, n);
  };
  return { prompt: (n) => count("prompt", n), completion: (n) => count("completion", n) };
}

function authenticate(keyring: TenantKeyring, header: string | undefined, res: Response): Tenant {
  const key = bearerKey(header);
  if (!key) throw unauthorized(res, "You didn't provide an API key: send it as 'Authorization: Bearer <key>'.");
  const tenant = keyring.authenticate(key);
  if (!tenant) throw unauthorized(res, "Incorrect API key provided.");
  return tenant;
}

export function routerGuard(opts: RouterGuardOptions): RequestHandler {
  const { keyring, limiter, metrics } = opts;
  metrics.open.set(keyring ? 0 : 1);
  return (req, res, next) => {
    if (ROUTER_OPEN_PATHS.has(req.path)) return next();
    let tenant: Tenant | undefined;
    try {
      tenant = keyring ? authenticate(keyring, req.headers.authorization, res) : undefined;
    } catch (err) {
      metrics.rejected.inc({ tenant: "", reason: "invalid_api_key" });
      return next(err);
    }
    const name = tenant?.name ?? "";
    let admission: Admission;
    try {
      admission = tenant ? limiter.admit(name, tenant.limits) : { debitTokens: () => undefined, release: () => undefined };
    } catch (err) {
      if (!(err instanceof LimitExceeded)) return next(err);
      metrics.rejected.inc({ tenant: name, reason: err.limit });
      return next(tooMany(err));
    }
    res.on("close", () => admission.release());
    res.on("finish", () => metrics.requests.inc({ tenant: name, status: String(res.statusCode) }));
    const identity: RequestIdentity = tenant ? { tenant: name, kvNamespace: tenant.kvNamespace } : ANONYMOUS;
    res.locals.identity = identity;
    res.locals.upstreamHeaders = identityHeaders(opts.fleetToken(), identity);
    res.locals.tokenMeter = meter(name, admission, metrics);
    next();
  };
}
