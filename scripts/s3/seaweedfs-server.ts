/**
 * A second S3-compatible server for tests and benchmarks, beside moto: SeaweedFS (`weed`,
 * Apache-2.0, built once from the Go module proxy by seaweedfs.sh) as one `weed server` process
 * (master, volume server, filer and S3 gateway) on 127.0.0.1, every port chosen free, its data in
 * a temporary directory removed on dispose. Same interface as moto-server.ts.
 * `npm run s3:up:seaweedfs` runs one in the foreground and prints its endpoint.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { S3Client } from "../../engine/kvstore/s3-client.ts";
import { freePorts } from "../../operator/local/ports.ts";
import type { S3Server } from "./moto-server.ts";
import { diesWithParent } from "../../testing/child-exit.ts";
import { tempDir } from "../../testing/temp-dir.ts";

const BUILD_SCRIPT = fileURLToPath(new URL("./seaweedfs.sh", import.meta.url));
const CREDENTIALS = { AWS_ACCESS_KEY_ID: "llmfleet-test", AWS_SECRET_ACCESS_KEY: "llmfleet-test-secret" };
/** Created (and probed with a PUT) before the server counts as up. */
export const SEAWEEDFS_BUCKET = "llmfleet";

/** The path of the cached `weed` binary, built first if missing (minutes; progress on stderr). */
export async function seaweedfsBinary(): Promise<string> {
  const { stdout } = await promisify(execFile)("bash", [BUILD_SCRIPT], { maxBuffer: 1 << 24 });
  return stdout.trim().split("\n").pop()!;
}

/**
 * One identity with every action (Admin lets it create buckets). With a config file weed never
 * falls back to the AWS_* environment, so what it accepts is exactly this.
 */
const s3Config = (): string =>
  JSON.stringify({
    identities: [
      {
        name: "llmfleet",
        credentials: [{ accessKey: CREDENTIALS.AWS_ACCESS_KEY_ID, secretKey: CREDENTIALS.AWS_SECRET_ACCESS_KEY }],
        actions: ["Admin", "Read", "List", "Tagging", "Write"],
      },
    ],
  });

/**
 * `weed server` arguments. gRPC ports are given explicitly: weed's default (HTTP port + 10000)
 * can be taken or out of range for a free ephemeral port. volume.max is generous because each
 * bucket is a collection with volumes of its own; volumes are small (64 MB).
 */
function serverArgs(dir: string, configFile: string, ports: number[]): string[] {
  const [master, masterGrpc, volume, volumeGrpc, filer, filerGrpc, s3, s3Grpc] = ports;
  return [
    // glog's files (weed.*.log.*) go to the data directory, which stop() removes, not to /tmp.
    `-logdir=${dir}`,
    "server",
    `-dir=${dir}`,
    "-ip=127.0.0.1",
    "-ip.bind=127.0.0.1",
    ...[`-master.port=${master}`, `-master.port.grpc=${masterGrpc}`, "-master.volumeSizeLimitMB=64", "-master.telemetry=false"],
    ...[`-volume.port=${volume}`, `-volume.port.grpc=${volumeGrpc}`, "-volume.max=200", "-volume.preStopSeconds=0"],
    ...["-filer", `-filer.port=${filer}`, `-filer.port.grpc=${filerGrpc}`, `-filer.localSocket=${join(dir, "filer.sock")}`],
    ...["-s3", `-s3.port=${s3}`, `-s3.port.grpc=${s3Grpc}`, `-s3.config=${configFile}`, "-s3.port.iceberg=0", "-s3.port.lance=0"],
    `-s3.localSocket=${join(dir, "s3.sock")}`,
  ];
}

/** weed server puts a local gRPC socket per service in /tmp (not configurable) and leaves it behind. */
const grpcSockets = (ports: number[]): string[] =>
  ["master", "volume", "filer", "s3"].map((service, i) => `/tmp/seaweedfs-${service}-grpc-${ports[2 * i + 1]}.sock`);

/**
 * Up means a bucket can be created and an object written: the S3 port answers before the
 * volume server has joined the master, and a fresh master then holds volume-id allocation for
 * one heartbeat (5 s, weed's guard against a rebuilt master), so the first PUT waits ~10 s in all.
 */
async function waitUp(endpoint: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const client = new S3Client({ endpoint, bucket: SEAWEEDFS_BUCKET, region: "us-east-1", accessKeyId: CREDENTIALS.AWS_ACCESS_KEY_ID, secretAccessKey: CREDENTIALS.AWS_SECRET_ACCESS_KEY, timeoutMs: 20_000 });
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`weed exited with ${child.exitCode}`);
    try {
      await client.ensureBucket();
      await client.put("llmfleet-ready-probe", Buffer.from("ok"));
      await client.delete("llmfleet-ready-probe");
      return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`weed did not accept a PUT on ${endpoint} within ${timeoutMs} ms: ${(last as Error | undefined)?.message ?? "no answer"}`);
}

export async function startSeaweedfsServer(): Promise<S3Server> {
  const bin = await seaweedfsBinary();
  const dir = tempDir("llmfleet-seaweedfs-");
  const configFile = join(dir, "s3.json");
  await writeFile(configFile, s3Config());
  const ports = await freePorts(8);
  // Each bucket is a collection, and the master pre-grows 7 volumes for a new one (seconds on the
  // first PUT); one at a time, as `weed mini` sets it.
  const env = { ...process.env, WEED_MASTER_VOLUME_GROWTH_COPY_1: "1" };
  const child = diesWithParent(spawn(bin, serverArgs(dir, configFile, ports), { cwd: dir, env, stdio: ["ignore", "ignore", "pipe"] }));
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const endpoint = `http://127.0.0.1:${ports[6]}`;
  // SIGTERM usually ends weed in under a second but at times takes 15 s (a volume growth in
  // flight); its data is thrown away, so a few seconds is all it gets.
  const stop = async (signal: NodeJS.Signals): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill(signal);
      const force = setTimeout(() => child.kill("SIGKILL"), 3_000);
      await exited;
      clearTimeout(force);
    }
    await rm(dir, { recursive: true, force: true });
    await Promise.all(grpcSockets(ports).map((f) => rm(f, { force: true })));
  };
  try {
    await waitUp(endpoint, child, 60_000);
  } catch (err) {
    await stop("SIGKILL");
    throw new Error(`${(err as Error).message}\n${stderr}`, { cause: err });
  }
  return { endpoint, env: { ...CREDENTIALS }, [Symbol.asyncDispose]: () => stop("SIGTERM") };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const server = await startSeaweedfsServer();
  process.stdout.write(
    `S3 (seaweedfs) at ${server.endpoint}  AWS_ACCESS_KEY_ID=${server.env.AWS_ACCESS_KEY_ID} AWS_SECRET_ACCESS_KEY=${server.env.AWS_SECRET_ACCESS_KEY}  bucket ${SEAWEEDFS_BUCKET}\n`,
  );
  const stop = (): void => void server[Symbol.asyncDispose]().then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
