/** Assembles the router's front door from its options: keys (file or Secrets), limits, fleet token. */
import type { RequestHandler } from "express";
import type { Registry } from "prom-client";
import type { KubeClient } from "../../lib/kube/client.ts";
import { parseAccess, watchAccessFile, watchAccessSecrets, watchRouterPeers, type AccessSource } from "./access-sources.ts";
import { fleetTokenSource } from "./fleet-auth.ts";
import { TenantLimiter } from "./limiter.ts";
import { routerGuard } from "./router-guard.ts";
import { createTenantMetrics } from "./tenant-metrics.ts";

export interface RouterAccessOptions {
  accessFile: string | undefined;
  accessTenants: string | undefined;
  accessNamespace: string;
  routerService: string | undefined;
  fleetTokenFile: string | undefined;
}

export interface RouterAccess extends Disposable {
  guard: RequestHandler;
  /** True when anyone who reaches the router is served. */
  open: boolean;
}

export const OPEN_MODE_WARNING = [
  "******************************************************************************",
  "* router: OPEN MODE: no API keys are configured (--access-file, --access-     *",
  "* tenants, or a Model's spec.access). ANYONE who can reach this port is      *",
  "* served, with no limits, and every client shares one KV prefix cache.       *",
  "******************************************************************************",
].join("\n");

function keySource(opts: RouterAccessOptions, kube: () => KubeClient, log: (l: string) => void): AccessSource | undefined {
  if (opts.accessFile) return watchAccessFile(opts.accessFile, log);
  if (opts.accessTenants) return watchAccessSecrets(kube(), opts.accessNamespace, parseAccess(opts.accessTenants), log);
  return undefined;
}

export function createRouterAccess(opts: RouterAccessOptions, deps: { registry: Registry; kube: () => KubeClient; log: (line: string) => void }): RouterAccess {
  const { log } = deps;
  const source = keySource(opts, deps.kube, log);
  const peers = opts.routerService ? watchRouterPeers(deps.kube(), opts.routerService, log) : undefined;
  const token = fleetTokenSource(opts.fleetTokenFile, { log });
  const guard = routerGuard({
    keyring: source?.keyring,
    limiter: new TenantLimiter({ share: peers?.count }),
    fleetToken: token.token,
    metrics: createTenantMetrics(deps.registry),
  });
  if (!source) log(OPEN_MODE_WARNING);
  else log(`router: API keys required; ${source.keyring.size} tenant(s); limits ${peers ? "split by the ready routers" : "held by this router alone"}`);
  if (!opts.fleetTokenFile) log("router: no --fleet-token-file: engine pods are reached without a fleet token");
  return {
    guard,
    open: !source,
    [Symbol.dispose]: () => {
      source?.[Symbol.dispose]();
      peers?.[Symbol.dispose]();
      token[Symbol.dispose]();
    },
  };
}
