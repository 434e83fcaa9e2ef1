/**
 * A real S3-compatible server for tests and benchmarks: moto_server (PyPI `moto[server]`,
 * installed once into a cached venv by moto-venv.sh) on 127.0.0.1 and a free port.
 * `npm run s3:up` runs one in the foreground and prints its endpoint.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freePorts } from "../../operator/local/ports.ts";
import { diesWithParent } from "../../testing/child-exit.ts";

export interface S3Server extends AsyncDisposable {
  endpoint: string;
  /** Credentials moto accepts (any); set them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. */
  env: { AWS_ACCESS_KEY_ID: string; AWS_SECRET_ACCESS_KEY: string };
}

const VENV_SCRIPT = fileURLToPath(new URL("./moto-venv.sh", import.meta.url));

export async function motoServerBinary(): Promise<string> {
  const { stdout } = await promisify(execFile)("bash", [VENV_SCRIPT], { maxBuffer: 1 << 20 });
  return stdout.trim().split("\n").pop()!;
}

async function waitUp(endpoint: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`moto_server exited with ${child.exitCode}`);
    const ok = await fetch(`${endpoint}/moto-api/`).then(
      (r) => r.status < 500,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`moto_server did not answer on ${endpoint} within ${timeoutMs} ms`);
}

export async function startS3Server(): Promise<S3Server> {
  const bin = await motoServerBinary();
  const [port] = (await freePorts(1)) as [number];
  const child = diesWithParent(spawn(bin, ["-H", "127.0.0.1", "-p", String(port)], { stdio: ["ignore", "ignore", "pipe"] }));
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitUp(endpoint, child, 30_000);
  } catch (err) {
    child.kill("SIGKILL");
    throw new Error(`${(err as Error).message}\n${stderr}`, { cause: err });
  }
  return {
    endpoint,
    env: { AWS_ACCESS_KEY_ID: "llmfleet-test", AWS_SECRET_ACCESS_KEY: "llmfleet-test-secret" },
    async [Symbol.asyncDispose](): Promise<void> {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const server = await startS3Server();
  process.stdout.write(
    `S3 (moto) at ${server.endpoint}  AWS_ACCESS_KEY_ID=${server.env.AWS_ACCESS_KEY_ID} AWS_SECRET_ACCESS_KEY=${server.env.AWS_SECRET_ACCESS_KEY}\n`,
  );
  const stop = (): void => void server[Symbol.asyncDispose]().then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
