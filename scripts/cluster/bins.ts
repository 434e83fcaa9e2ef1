// Locates (building on first use) the control-plane binaries via build-bins.sh.
// build-bins.sh prints progress on stderr and, last, the bin dir on stdout; when everything is
// cached it only prints the dir, so calling it on every start is cheap.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { runBuildScript } from "../build-script.ts";

export const BINARIES = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"];
/** kwok's default Stage objects (node init + heartbeat, pod ready/complete/delete). */
export const KWOK_STAGES = "kwok-stages.yaml";

const SCRIPT = join(import.meta.dirname, "build-bins.sh");

/** Runs build-bins.sh with its progress forwarded to our stderr; resolves to the bin dir. */
export async function ensureBins(): Promise<string> {
  const dir = await runBuildScript(SCRIPT);
  const missing = [...BINARIES, KWOK_STAGES].filter((b) => !existsSync(join(dir, b)));
  if (missing.length > 0) throw new Error(`build-bins.sh: ${dir} lacks ${missing.join(", ")}`);
  return dir;
}
