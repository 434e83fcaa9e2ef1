// Locates (building on first use) the control-plane binaries via build-bins.sh.
// build-bins.sh prints progress on stderr and, last, the bin dir on stdout; when everything is
// cached it only prints the dir, so calling it on every start is cheap.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";

export const BINARIES = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"];
/** kwok's default Stage objects (node init + heartbeat, pod ready/complete/delete). */
export const KWOK_STAGES = "kwok-stages.yaml";

const SCRIPT = join(import.meta.dirname, "build-bins.sh");

/** Runs build-bins.sh with its progress forwarded to our stderr; resolves to the bin dir. */
export function ensureBins(): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [SCRIPT], { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => (stdout += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      const dir = stdout.trim().split("\n").pop() ?? "";
      if (code !== 0) return reject(new Error(`build-bins.sh exited with ${code}`));
      const missing = [...BINARIES, KWOK_STAGES].filter((b) => !existsSync(join(dir, b)));
      if (missing.length > 0) return reject(new Error(`build-bins.sh: ${dir} lacks ${missing.join(", ")}`));
      resolve(dir);
    });
  });
}
