// The build scripts (scripts/cluster/build-bins.sh, scripts/pulumi/build.sh) share one contract:
// progress on stderr, and last on stdout the path of what they built (or found cached). This runs
// one with its progress forwarded to our stderr and resolves to that path.
import { spawn } from "node:child_process";
import { basename } from "node:path";

export function runBuildScript(script: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [script], { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => (stdout += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`${basename(script)} exited with ${code}`));
      resolve(stdout.trim().split("\n").pop() ?? "");
    });
  });
}
