/**
 * The kvstore role on its own: tier parsing (the operator's flags), memory LRU by bytes,
 * crash-safe checksummed disk files, a real S3-compatible server (moto, scripts/s3) for the
 * object tier, promotion on hit, demotion on eviction, TTL, and the HTTP API with its metrics.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startS3Server, type S3Server } from "../../scripts/s3/moto-server.ts";
import { listen, postJson, type Running } from "../../testing/engine.ts";
import { kvBlockHashes } from "./block-keys.ts";
import { DiskTier } from "./disk-tier.ts";
import { encodeKvEntry } from "./kv-entry.ts";
import { createKvStorePod, type KvStorePod } from "../kvstore-pod.ts";
import { MemoryTier } from "./memory-tier.ts";
import { parseTierSpec } from "./tier-spec.ts";

let s3: S3Server;
let dir: string;
let pod: KvStorePod;
let http: Running;

const entry = (fill: number, bytes = 1000): Buffer => encodeKvEntry({ model: "m", tokens: 256, codec: "none", stateBytes: bytes }, Buffer.alloc(bytes, fill));
const key = (i: number): string =>
  kvBlockHashes(
    Array.from({ length: 256 }, () => i),
    256,
    { model: "m", tenant: "t" },
  )[0]!;

before(async () => {
  s3 = await startS3Server();
  dir = await mkdtemp(join(tmpdir(), "llmfleet-kv-"));
  const tiers = [
    `name=ram,medium=memory,capacity=2500`,
    `name=ssd,medium=disk,capacity=5000,path=${dir}/ssd`,
    `name=s3,medium=objectStore,endpoint=${s3.endpoint},bucket=llmfleet-kv,region=eu-west-1,ttl=168h`,
  ].map(parseTierSpec);
  pod = await createKvStorePod({ blockTokens: 256, codec: "default", tenantSalt: "ns", tiers, env: s3.env });
  http = await listen(pod.app);
});
after(async () => {
  await http?.[Symbol.asyncDispose]();
  await pod?.[Symbol.asyncDispose]();
  await s3?.[Symbol.asyncDispose]();
  await rm(dir, { recursive: true, force: true });
});

test("tier flags as the operator plans them parse to specs", () => {
  const t = parseTierSpec("name=s3,medium=objectStore,endpoint=http://minio:9000/,bucket=kv-cache,region=r1,ttl=168h");
  assert.deepEqual([t.endpoint, t.bucket, t.region, t.ttlMs], ["http://minio:9000", "kv-cache", "r1", 168 * 3600e3]);
  assert.equal(parseTierSpec("name=ram,medium=memory,capacity=4Gi").capacityBytes, 4 * 2 ** 30);
  assert.equal(parseTierSpec("name=ssd,medium=disk,capacity=1Ti,path=/x").capacityBytes, 2 ** 40);
  assert.throws(() => parseTierSpec("name=ssd,medium=disk,capacity=1Ti"), /path=/);
  assert.throws(() => parseTierSpec("name=x,medium=tape,capacity=1"), /medium/);
});

test("keys chain over blocks and are salted by model and tenant", () => {
  const tokens = Array.from({ length: 600 }, (_, i) => i);
  const a = kvBlockHashes(tokens, 256, { model: "m", tenant: "a" });
  assert.equal(a.length, 2);
  assert.equal(kvBlockHashes(tokens.slice(0, 512), 256, { model: "m", tenant: "a" })[1], a[1]);
  assert.notEqual(kvBlockHashes(tokens, 256, { model: "m", tenant: "b" })[0], a[0]);
  assert.notEqual(kvBlockHashes(tokens, 256, { model: "m2", tenant: "a" })[0], a[0]);
  const changed = [...tokens];
  changed[3] = 99999;
  assert.notEqual(kvBlockHashes(changed, 256, { model: "m", tenant: "a" })[1], a[1]);
});

test("memory tier evicts least recently used by bytes and expires by TTL", async (t) => {
  const mem = new MemoryTier({ name: "m", capacityBytes: 3000, ttlMs: undefined });
  await mem.put(key(1), entry(1));
  await mem.put(key(2), entry(2));
  await mem.get(key(1));
  const evicted = await mem.put(key(3), entry(3));
  assert.deepEqual(
    evicted.map((e) => e.key),
    [key(2)],
  );
  assert.ok(mem.stats().bytes <= 3000);
  t.mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
  const short = new MemoryTier({ name: "m", capacityBytes: 3000, ttlMs: 60_000 });
  await short.put(key(1), entry(1));
  t.mock.timers.tick(60_000);
  assert.deepEqual(await short.get(key(1)), entry(1), "fresh at its TTL");
  t.mock.timers.tick(1);
  assert.equal(await short.get(key(1)), undefined);
});

test("disk tier expires by TTL, after a restart too (judged from the file's mtime)", async (t) => {
  t.mock.timers.enable({ apis: ["Date"], now: Date.now() });
  const spec = { name: "d", medium: "disk" as const, capacityBytes: 10_000, ttlMs: 60_000, path: join(dir, "disk-ttl") };
  const disk = await DiskTier.open(spec);
  await disk.put(key(1), entry(1));
  // The restarted tier's clock starts at the real mtime, a few ms after the mocked clock's start.
  t.mock.timers.tick(30_000);
  const reopened = await DiskTier.open(spec);
  assert.deepEqual([await disk.has(key(1)), await reopened.has(key(1))], [true, true]);
  t.mock.timers.tick(31_000);
  assert.deepEqual([await disk.get(key(1)), await reopened.get(key(1))], [undefined, undefined]);
  assert.deepEqual(await readdir(join(spec.path, key(1).slice(0, 2))), [], "an expired entry's file is deleted");
});

test("disk tier: temp files of a crashed write are dropped, the index survives a restart, corrupt files are rejected", async () => {
  const path = join(dir, "disk-only");
  const disk = await DiskTier.open({ name: "d", medium: "disk", capacityBytes: 10_000, ttlMs: undefined, path });
  await disk.put(key(1), entry(1));
  await disk.put(key(2), entry(2));
  await writeFile(join(path, key(1).slice(0, 2), `${key(1)}.interrupted.tmp`), "torn");
  await writeFile(join(path, key(2).slice(0, 2), key(2)), Buffer.concat([entry(2).subarray(0, 500), Buffer.alloc(10)]));
  const reopened = await DiskTier.open({ name: "d", medium: "disk", capacityBytes: 10_000, ttlMs: undefined, path });
  assert.equal(reopened.stats().blocks, 2);
  assert.deepEqual(await reopened.get(key(1)), entry(1));
  assert.equal(await reopened.get(key(2)), undefined);
  assert.equal(reopened.corrupt, 1);
  assert.equal(reopened.stats().blocks, 1);
  const files = (await readdir(path, { recursive: true })).filter((f) => f.endsWith(".tmp"));
  assert.deepEqual(files, []);
});

test("writes land in memory, evictions demote to disk then S3, hits promote back", async () => {
  const keys = [1, 2, 3, 4, 5, 6, 7, 8].map(key);
  for (const [i, k] of keys.entries()) await pod.store.put(k, entry(i));
  const stats = Object.fromEntries(pod.store.tiers.map((t) => [t.name, t.stats().blocks]));
  assert.equal(stats.ram, 2);
  assert.ok(stats.ssd! >= 3, JSON.stringify(stats));
  assert.ok(stats.s3! >= 1, JSON.stringify(stats));
  const hit = await pod.store.get(keys[0]!);
  assert.equal(hit?.tier, "s3");
  assert.deepEqual(hit.value, entry(0));
  await pod.store.settled();
  assert.equal((await pod.store.get(keys[0]!))?.tier, "ram");
});

test("HTTP API: config, lookup of the longest prefix, get, corrupt upload refused, metrics per tier", async () => {
  const cfg = await (await fetch(`${http.url}/v1/kv/config`)).json();
  assert.deepEqual(cfg, {
    blockTokens: 256,
    codec: "default",
    tenantSalt: "ns",
    tiers: [
      { name: "ram", medium: "memory" },
      { name: "ssd", medium: "disk" },
      { name: "s3", medium: "objectStore" },
    ],
    formats: ["v1", "v2"],
    uploadIds: true,
    blockCodecs: ["none", "compact2b", "compact1b"],
  });
  const tokens = Array.from({ length: 1024 }, (_, i) => i % 97);
  const keys = kvBlockHashes(tokens, 256, { model: "m", tenant: "ns" });
  const put = await fetch(`${http.url}/v1/kv/${keys[1]}`, { method: "PUT", body: new Uint8Array(entry(9)) });
  assert.equal(put.status, 201);
  const found = await postJson(`${http.url}/v1/kv/lookup`, { keys });
  assert.deepEqual(found.json, { index: 1, key: keys[1], tier: "ram", entryKey: keys[1], entryBlocks: 2 });
  const got = await fetch(`${http.url}/v1/kv/${keys[1]}`);
  assert.equal(got.headers.get("x-llmfleet-kv-tier"), "ram");
  assert.deepEqual(Buffer.from(await got.arrayBuffer()), entry(9));
  assert.equal((await fetch(`${http.url}/v1/kv/${keys[0]}`)).status, 404);
  const bad = entry(9);
  bad[100] = bad[100]! ^ 0xff;
  assert.equal((await fetch(`${http.url}/v1/kv/${keys[2]}`, { method: "PUT", body: new Uint8Array(bad) })).status, 400);
  assert.equal((await fetch(`${http.url}/v1/kv/not-a-key`)).status, 400);
  const metrics = await (await fetch(`${http.url}/metrics`)).text();
  const series = (name: string, tier?: string): RegExp => new RegExp(`${name}\\{[^}]*${tier ? `tier="${tier}"` : ""}[^}]*\\} [1-9]`);
  for (const [name, tier] of [
    ["llmfleet_kv_hits_total", "ram"],
    ["llmfleet_kv_hits_total", "s3"],
    ["llmfleet_kv_misses_total"],
    ["llmfleet_kv_evictions_total", "ram"],
    ["llmfleet_kv_bytes", "ssd"],
    ["llmfleet_kv_blocks", "s3"],
    ["llmfleet_kv_load_seconds_count", "s3"],
  ]) {
    assert.match(metrics, series(name!, tier), `${name} ${tier}`);
  }
});

test("an expired object in S3 is a miss", async (t) => {
  await using short = await createKvStorePod({
    blockTokens: 256,
    codec: "none",
    tenantSalt: "",
    tiers: [parseTierSpec(`name=s3,medium=objectStore,endpoint=${s3.endpoint},bucket=llmfleet-kv-ttl,ttl=10s`)],
    env: s3.env,
  });
  await short.store.put(key(42), entry(42));
  // Age is judged from the server's Last-Modified (whole seconds); requests are signed with the
  // mocked clock, a few seconds ahead at most.
  t.mock.timers.enable({ apis: ["Date"], now: Date.now() });
  assert.ok(await short.store.get(key(42)), "fresh within its TTL");
  t.mock.timers.tick(11_000);
  assert.equal(await short.store.get(key(42)), undefined);
});
