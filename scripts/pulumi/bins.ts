// Locates (building on first use) the Pulumi CLI via build.sh, as scripts/cluster/bins.ts does for
// the control plane: build.sh prints progress on stderr and, last, the install root on stdout
// (`pulumi` in its bin/); once built it only prints the root, so calling it on every start is cheap.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";

const SCRIPT = join(import.meta.dirname, "build.sh");

export function ensurePulumi(): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [SCRIPT], { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => (stdout += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      const root = stdout.trim().split("\n").pop() ?? "";
      if (code !== 0) return reject(new Error(`scripts/pulumi/build.sh exited with ${code}`));
      if (!existsSync(join(root, "bin", "pulumi"))) return reject(new Error(`scripts/pulumi/build.sh: ${root}/bin lacks pulumi`));
      resolve(root);
    });
  });
}
