// The operator as a process, without a cluster: it must exit non-zero within seconds and say what
// it tried, not wait for leadership against http://localhost:8080 forever.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { tempDir } from "../testing/temp-dir.ts";

const ROOT = resolve(import.meta.dirname, "..");

interface Exit {
  code: number | null;
  output: string;
  ms: number;
}

/** Runs operator/main.ts with `env` in place of the cluster variables of this process; killed after 20 s. */
function runOperator(env: Record<string, string>, args: string[] = []): Promise<Exit> {
  const base = { ...process.env };
  for (const name of ["KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"]) delete base[name];
  const started = Date.now();
  const child = spawn(process.execPath, ["--import", "tsx", "operator/main.ts", "--health-port", "0", "--health-host", "127.0.0.1", ...args], {
    cwd: ROOT,
    env: { ...base, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr.on("data", (d: Buffer) => (output += d.toString()));
  const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  return new Promise((res) =>
    child.on("exit", (code) => {
      clearTimeout(killer);
      res({ code, output, ms: Date.now() - started });
    }),
  );
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

test("with no kubeconfig and not in a cluster, the operator exits non-zero and lists what it tried", async () => {
  const home = tempDir("llmfleet-nohome-");
  const exit = await runOperator({ HOME: home });
  assert.equal(exit.code, 1, exit.output);
  assert.match(exit.output, /operator failed: no cluster to connect to\. Tried:/);
  assert.match(exit.output, /\$KUBECONFIG: not set/);
  assert.match(exit.output, new RegExp(`${home}/.kube/config: no such file`));
  assert.match(exit.output, /in-cluster service account: needs \$KUBERNETES_SERVICE_HOST \(not set\)/);
  assert.doesNotMatch(exit.output, /waiting for leadership|localhost:8080|\n\s+at /, "no wait, no default server, no stack trace");
  assert.ok(exit.ms < 15_000, `exited in ${exit.ms} ms`);
});

test("with a kubeconfig whose API server does not answer, it exits non-zero naming the URL after its attempts", async () => {
  const dir = tempDir("llmfleet-kc-");
  const server = `https://127.0.0.1:${await closedPort()}`;
  const kubeconfig = join(dir, "config");
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "c", cluster: { server, "insecure-skip-tls-verify": true } }],
      users: [{ name: "u", user: { token: "t" } }],
      contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
      "current-context": "x",
    }),
  );
  const exit = await runOperator({ HOME: dir, KUBECONFIG: kubeconfig }, ["--connect-attempts", "2"]);
  assert.equal(exit.code, 1, exit.output);
  assert.match(
    exit.output,
    new RegExp(`the API server at ${server} \\(from \\$KUBECONFIG \\(${kubeconfig}\\)\\) did not answer in 2 attempts: connect ECONNREFUSED`),
  );
  assert.doesNotMatch(exit.output, /waiting for leadership/);
  assert.ok(exit.ms < 15_000, `exited in ${exit.ms} ms`);
});
