/**
 * `npm run bench:s3-get [-- --servers moto,seaweedfs,floor] [--objects 33] [--sizes 245760,1048576]
 * [--inflight 1,4,16] [--repeats 5] [--out FILE]`: what one GET costs on each S3 server, through
 * the engine's own S3 client (engine/kvstore/s3-client.ts, SigV4, one fetch per object).
 *
 * Why: bench:kv-link's 8K load from the S3 tier is 33 blocks, one GET each; at 1 Gbit/s it took
 * ~400 ms with moto whether 4 or 16 GETs were in flight, even unshaped, so the server's per-GET
 * cost, not bytes, bounded it. This asks whether a real object store (SeaweedFS) does better.
 * `floor` is no S3 server but a Map behind node:http in its own process (s3-get-floor.ts): what
 * the client and loopback cost by themselves, on the same machine, in the same run.
 *
 * Per server: PUT `objects` random objects of each size, then GET them all with 1, 4 and 16 in
 * flight (a pool: a GET starts when one finishes). The servers run side by side and take turns
 * repeat by repeat, so the other work on a shared machine falls on both alike. Per cell, medians
 * over repeats of: the wall time for all objects, wall time / objects (what a load pays per
 * block) and the mean of each GET's own latency (what a GET costs while others are in flight).
 * Unshaped loopback: this is the servers' own cost. Writes bench/results/s3-get.json (or --out).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { benchArgs, intList } from "./cli.ts";
import { S3Client } from "../engine/kvstore/s3-client.ts";
import type { S3Server } from "../scripts/s3/moto-server.ts";
import { s3ServerKind, startS3ServerOf, type S3ServerKind } from "../scripts/s3/servers.ts";

type Target = S3ServerKind | "floor";

const { values: v } = benchArgs({
  options: { servers: { type: "string" }, objects: { type: "string" }, sizes: { type: "string" }, inflight: { type: "string" }, repeats: { type: "string" }, out: { type: "string" } },
});
const SERVERS = (v.servers ?? "moto,seaweedfs,floor").split(",").map((s): Target => (s === "floor" ? s : s3ServerKind(s)));
const OBJECTS = Number(v.objects ?? 33);
/** ~240 KB: one compact 8K block of the default model; ~1 MB: one raw (`none`) block. */
const SIZES = intList("sizes", v.sizes ?? "245760,1048576");
const INFLIGHT = intList("inflight", v.inflight ?? "1,4,16");
const REPEATS = Number(v.repeats ?? 5);
const OUT = v.out ?? new URL("./results/s3-get.json", import.meta.url);
const BUCKET = "llmfleet-s3-get";

interface Cell {
  server: Target;
  objectBytes: number;
  inflight: number;
  totalMs: number[];
  medianTotalMs: number;
  /** Median total / objects: the wall time a load pays per object. */
  msPerObject: number;
  /** Median over repeats of the mean GET latency (start to last body byte). */
  meanGetMs: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number): number => Math.round(x * 10) / 10;

function clientOf(server: S3Server): S3Client {
  const { AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey } = server.env;
  return new S3Client({ endpoint: server.endpoint, bucket: BUCKET, region: "us-east-1", accessKeyId, secretAccessKey });
}

const keyOf = (size: number, i: number): string => `obj-${size}-${i}`;

async function putAll(client: S3Client, size: number): Promise<void> {
  for (let i = 0; i < OBJECTS; i++) await client.put(keyOf(size, i), randomBytes(size));
}

/** GETs every object of `size` with `inflight` at a time; wall time and each GET's latency. */
async function getAll(client: S3Client, size: number, inflight: number): Promise<{ totalMs: number; getMs: number[] }> {
  const getMs: number[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < OBJECTS; i = next++) {
      const t0 = performance.now();
      const got = await client.get(keyOf(size, i));
      getMs.push(performance.now() - t0);
      if (got?.body.length !== size) throw new Error(`GET ${keyOf(size, i)}: ${got?.body.length ?? "no"} bytes, not ${size}`);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inflight }, worker));
  return { totalMs: performance.now() - t0, getMs };
}

interface Samples {
  totalMs: number[];
  meanMs: number[];
}

/** One (size, in flight) cell: the servers take turns repeat by repeat. */
async function sample(clients: Map<Target, S3Client>, objectBytes: number, inflight: number): Promise<Map<Target, Samples>> {
  const samples = new Map<Target, Samples>([...clients.keys()].map((k) => [k, { totalMs: [], meanMs: [] }]));
  for (let r = 0; r < REPEATS; r++) {
    for (const [server, client] of clients) {
      const { totalMs, getMs } = await getAll(client, objectBytes, inflight);
      samples.get(server)!.totalMs.push(round(totalMs));
      samples.get(server)!.meanMs.push(getMs.reduce((a, b) => a + b, 0) / getMs.length);
    }
  }
  return samples;
}

async function measure(clients: Map<Target, S3Client>): Promise<Cell[]> {
  const cells: Cell[] = [];
  for (const objectBytes of SIZES) {
    for (const inflight of INFLIGHT) {
      for (const [server, s] of await sample(clients, objectBytes, inflight)) {
        const medianTotalMs = median(s.totalMs);
        const cell = { server, objectBytes, inflight, totalMs: s.totalMs, medianTotalMs, msPerObject: round(medianTotalMs / OBJECTS), meanGetMs: round(median(s.meanMs)) };
        cells.push(cell);
        process.stderr.write(`s3-get: ${server} ${objectBytes} B, ${inflight} in flight: ${medianTotalMs} ms for ${OBJECTS}, ${cell.msPerObject} ms/object, GET ${cell.meanGetMs} ms\n`);
      }
    }
  }
  return cells;
}

/** The floor server (s3-get-floor.ts) as its own node process, up once it prints its port. */
async function startFloor(): Promise<S3Server> {
  const file = new URL("./s3-get-floor.ts", import.meta.url).pathname;
  const child = spawn(process.execPath, ["--import", "tsx", file], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<string>((resolve, reject) => {
    child.stdout.once("data", (d: Buffer) => resolve(d.toString().trim()));
    child.once("exit", (code) => reject(new Error(`s3-get-floor exited with ${code}`)));
  });
  return {
    endpoint: `http://127.0.0.1:${port}`,
    env: { AWS_ACCESS_KEY_ID: "floor", AWS_SECRET_ACCESS_KEY: "floor" },
    async [Symbol.asyncDispose](): Promise<void> {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/** Starts each server, fills its bucket and reads it once untimed (connections opened, first reads of fresh objects paid). */
async function prepare(servers: S3Server[]): Promise<Map<Target, S3Client>> {
  const clients = new Map<Target, S3Client>();
  for (const kind of SERVERS) {
    const server = kind === "floor" ? await startFloor() : await startS3ServerOf(kind);
    servers.push(server);
    const client = clientOf(server);
    await client.ensureBucket();
    for (const size of SIZES) await putAll(client, size);
    for (const size of SIZES) await getAll(client, size, 4);
    clients.set(kind, client);
  }
  return clients;
}

async function run(clients: Map<Target, S3Client>): Promise<void> {
  const load = [loadavg(), [] as number[]];
  const cells = await measure(clients);
  load[1] = loadavg();
  const summary = {
    bench: "s3-get",
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "unknown", loadavgBefore: load[0]!.map(round), loadavgAfter: load[1].map(round) },
    objects: OBJECTS,
    repeats: REPEATS,
    client: "engine/kvstore/s3-client.ts (SigV4, UNSIGNED-PAYLOAD, node fetch), unshaped loopback",
    cells,
  };
  await writeFile(OUT, `${JSON.stringify(summary, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(summary.cells.map(({ totalMs: _t, ...c }) => c))}\n`);
}


async function main(): Promise<void> {
  const servers: S3Server[] = [];
  try {
    await run(await prepare(servers));
  } finally {
    for (const server of servers) await server[Symbol.asyncDispose]();
  }
}

await main();
