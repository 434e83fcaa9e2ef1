// Run the cluster's own kubectl (LLMFLEET_KUBECTL, set by scripts/test-integration.ts) against
// $KUBECONFIG. Never throws on a non-zero exit: tests often assert that kubectl fails.
import { spawn } from "node:child_process";

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface KubectlOptions {
  /** Written to kubectl's stdin (e.g. a manifest for `apply -f -`). */
  stdin?: string;
  /** Default $KUBECONFIG. */
  kubeconfig?: string;
  /** Kill kubectl after this long (code 124 then). Default 60 s. */
  timeoutMs?: number;
}

export function kubectlPath(): string {
  return process.env.LLMFLEET_KUBECTL ?? "kubectl";
}

export function kubectl(args: string[], opts: KubectlOptions = {}): Promise<KubectlResult> {
  const env = { ...process.env };
  if (opts.kubeconfig) env.KUBECONFIG = opts.kubeconfig;
  return new Promise((resolve, reject) => {
    const child = spawn(kubectlPath(), args, { env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal === "SIGKILL" ? 124 : 1), stdout, stderr });
    });
    child.stdin.on("error", () => undefined); // kubectl may exit before reading all input
    child.stdin.end(opts.stdin ?? "");
  });
}

/** kubectl that must succeed: returns stdout, throws with stderr otherwise. */
export async function kubectlOk(args: string[], opts: KubectlOptions = {}): Promise<string> {
  const res = await kubectl(args, opts);
  if (res.code !== 0) throw new Error(`kubectl ${args.join(" ")} exited ${res.code}: ${res.stderr.trim()}`);
  return res.stdout;
}
