// Access for `npm start`: with --access-file the routers take tenants, keys and limits from that
// file (re-read when it changes) instead of the cluster's Secrets; without it they run open, which
// main.ts says loudly. Either way the local processes share a fleet token and a KV encryption key
// generated for this run (files in the run directory, mode 0600), so the engines on loopback
// refuse requests that do not come from the fleet, as in a cluster.
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PlannedDeployment } from "./fleet.ts";
import { withFlag } from "./processes.ts";

/** Flags planned for a cluster (Secrets through the API, the KV store's own token Secret), dropped locally: one run token serves all. */
const CLUSTER_ONLY = ["--access-tenants", "--access-namespace", "--router-service", "--kv-store-token-file"];

function without(args: string[], flags: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (flags.includes(args[i]!)) i++;
    else out.push(args[i]!);
  }
  return out;
}

export interface LocalSecrets {
  fleetTokenFile: string;
  kvKeyFile: string;
}

/** A fleet token and a KV master key for this run. */
export function writeLocalSecrets(runDir: string): LocalSecrets {
  const fleetTokenFile = join(runDir, "fleet-token");
  const kvKeyFile = join(runDir, "kv-encryption-key");
  writeFileSync(fleetTokenFile, randomBytes(32).toString("base64url"), { mode: 0o600 });
  writeFileSync(kvKeyFile, randomBytes(32).toString("base64url"), { mode: 0o600 });
  return { fleetTokenFile, kvKeyFile };
}

/** The planned deployments with local access: the access file on routers, the run's secrets on every process. */
export function withLocalAccess(planned: PlannedDeployment[], secrets: LocalSecrets, accessFile: string | undefined): PlannedDeployment[] {
  return planned.map((d) => {
    let args = withFlag(without(d.args, CLUSTER_ONLY), "--fleet-token-file", secrets.fleetTokenFile);
    if (d.role === "router" && accessFile) args = withFlag(args, "--access-file", accessFile);
    if (d.role === "prefill" || d.role === "aggregated") args = withFlag(args, "--kv-encryption-key-file", secrets.kvKeyFile);
    return { ...d, args };
  });
}
