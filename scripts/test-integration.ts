// `npm run test:integration`: runs lib/**, operator/**/*.integration.test.ts and
// e2e/**/*.integration.test.ts against a real control plane.
//  - default: a fresh cluster in a temp state dir, stopped (and removed) afterwards, also when
//    tests fail or the run is interrupted;
//  - KUBECONFIG_REUSE=1 with KUBECONFIG set: the given cluster, left running.
// Tests see KUBECONFIG and LLMFLEET_KUBECTL. Extra arguments: paths ending in .ts replace the
// discovered files, anything else is passed to `node --test` (e.g. --test-name-pattern=gpu).
// Exits with the test run's exit code.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { ensureBins } from "./cluster/bins.ts";
import { startCluster, type Cluster } from "./cluster/cluster.ts";

const ROOT = resolve(import.meta.dirname, "..");
const SUFFIX = ".integration.test.ts";

/** Recursive find instead of a glob: Node 20's `--test` does not expand globs, and an empty match is fine. */
function findTests(dir: string): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return []; // the tree does not exist (yet)
  }
  return entries.flatMap((e) => {
    if (e.name === "node_modules" || e.name.startsWith(".")) return [];
    const path = join(dir, e.name);
    if (e.isDirectory()) return findTests(path);
    return e.isFile() && e.name.endsWith(SUFFIX) ? [relative(ROOT, path)] : [];
  });
}

// Ctrl-C / SIGTERM must never leak the detached cluster: we catch them for the whole run,
// forward them to the test process, and stop the cluster before exiting. A signal during
// startup lets startup finish (seconds) and then skips the tests.
const interrupt: { signal?: NodeJS.Signals; child?: ChildProcess } = {};
function onSignal(sig: NodeJS.Signals): void {
  interrupt.signal = sig;
  interrupt.child?.kill(sig);
}

function runTests(files: string[], flags: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const args = ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=spec", ...flags, ...files];
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: "inherit" });
  interrupt.child = child;
  return new Promise((resolveCode, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolveCode(code ?? (signal ? 130 : 1)));
  });
}

interface Target {
  env: NodeJS.ProcessEnv;
  cluster?: Cluster;
}

async function target(): Promise<Target> {
  const { KUBECONFIG, KUBECONFIG_REUSE } = process.env;
  if (KUBECONFIG_REUSE === "1" && KUBECONFIG) {
    const kubectl = process.env.LLMFLEET_KUBECTL ?? join(await ensureBins(), "kubectl");
    process.stderr.write(`test:integration: reusing the cluster of ${KUBECONFIG}\n`);
    return { env: { ...process.env, LLMFLEET_KUBECTL: kubectl } };
  }
  const dir = mkdtempSync(join(tmpdir(), "llmfleet-it-"));
  const cluster = await startCluster({ dir });
  const env = { ...process.env, KUBECONFIG: cluster.kubeconfigPath, LLMFLEET_KUBECTL: cluster.kubectlPath };
  return { env, cluster };
}

async function main(): Promise<number> {
  const extra = process.argv.slice(2);
  const chosen = extra.filter((a) => a.endsWith(".ts"));
  const files = chosen.length > 0 ? chosen : [...findTests(join(ROOT, "lib")), ...findTests(join(ROOT, "operator")), ...findTests(join(ROOT, "e2e"))];
  if (files.length === 0) {
    process.stderr.write(`test:integration: no *${SUFFIX} files under operator/ or e2e/\n`);
    return 0;
  }
  process.on("SIGINT", onSignal).on("SIGTERM", onSignal);
  const { env, cluster } = await target();
  try {
    if (interrupt.signal) return 130;
    return await runTests(files, extra.filter((a) => !a.endsWith(".ts")), env);
  } finally {
    // LLMFLEET_KEEP_CLUSTER=1 keeps the state dir (logs, kubeconfig) for a post-mortem.
    await cluster?.stop({ keepState: process.env.LLMFLEET_KEEP_CLUSTER === "1" });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`test:integration: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
