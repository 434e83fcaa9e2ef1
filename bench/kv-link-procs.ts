/**
 * bench:kv-link's helpers: a kvstore pod as its own process (the engine program, `--role
 * kvstore`, as a KVStore runs it), free ports for it, and a check of what each link delivers. The store never decodes an entry (it
 * stores and serves bytes); pods decode what they load.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { S3Client } from "../engine/kvstore/s3-client.ts";
import { freePorts } from "../operator/local/ports.ts";
import type { ShapedProxyProcess } from "../testing/shaped-proxy-process.ts";
import { diesWithParent } from "../testing/child-exit.ts";

export interface StoreProcess extends AsyncDisposable {
  url: string;
}

const MAIN = fileURLToPath(new URL("../engine/main.ts", import.meta.url));

/** `engine/main.ts --role kvstore` with these tiers and codec, up when it answers /v1/kv/config. */
export async function startStoreProcess(codec: string, tiers: string[], env: Record<string, string>): Promise<StoreProcess> {
  const [port, kvPort] = (await freePorts(2)) as [number, number];
  const args = ["--import", "tsx", MAIN, "--role", "kvstore", "--host", "127.0.0.1", "--port", String(port), "--kv-port", String(kvPort), "--codec", codec];
  for (const t of tiers) args.push("--tier", t);
  const child = diesWithParent(spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] }));
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`kvstore exited with ${child.exitCode}: ${stderr}`);
    const up = await fetch(`${url}/v1/kv/config`).then(
      (r) => r.ok,
      () => false,
    );
    if (up) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`kvstore did not come up on ${url}: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    async [Symbol.asyncDispose](): Promise<void> {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGINT");
      await exited;
    },
  };
}

/**
 * What the object store delivers per link: MB/s of a 16 MB GET straight from the S3 server (keyed
 * `<server>_direct`) and through the proxy at each rate (one S3 request, as a store's get is), so
 * the TTFTs can be read against it.
 */
export async function linkCheck(
  s3: { endpoint: string; env: Record<string, string> },
  proxy: ShapedProxyProcess,
  links: Record<string, number>,
  server = "moto",
): Promise<Record<string, number>> {
  const client = (endpoint: string): S3Client =>
    new S3Client({ endpoint, bucket: "llmfleet-kv-link-probe", region: "us-east-1", accessKeyId: s3.env.AWS_ACCESS_KEY_ID!, secretAccessKey: s3.env.AWS_SECRET_ACCESS_KEY! });
  const direct = client(s3.endpoint);
  const shaped = client(`http://127.0.0.1:${proxy.port}`);
  await direct.ensureBucket();
  const body = randomBytes(16 * 2 ** 20);
  await direct.put("probe", body);
  const mbPerSecond = async (c: S3Client): Promise<number> => {
    const t0 = performance.now();
    const got = await c.get("probe");
    if (got?.body.length !== body.length) throw new Error("link check: the probe object came back short");
    return Math.round(body.length / 1e6 / ((performance.now() - t0) / 1000));
  };
  const out: Record<string, number> = { [`${server}_direct`]: await mbPerSecond(direct) };
  for (const [name, rate] of Object.entries(links)) {
    await proxy.setRate(rate);
    out[name] = await mbPerSecond(shaped);
  }
  await proxy.setRate(Infinity);
  return out;
}
