/** Standalone: keys, limits, the guards and KV sealing, without a model. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import express from "express";
import { Registry } from "prom-client";
import { TenantKeyring, bearerKey, kvNamespaceOf } from "./tenants.ts";
import { LimitExceeded, TenantLimiter } from "./limiter.ts";
import { parseAccess, watchAccessFile } from "./access-sources.ts";
import { routerGuard } from "./router-guard.ts";
import { fixedFleetToken, fleetGuard, fleetTokenSource } from "./fleet-auth.ts";
import { createKvStorePod } from "../kvstore-pod.ts";
import { createTenantMetrics } from "./tenant-metrics.ts";
import { FLEET_TOKEN_HEADER, KV_NAMESPACE_HEADER, TENANT_HEADER } from "./identity.ts";
import { KvSealer, KvSealError } from "../kvstore/kv-seal.ts";
import { errorHandler } from "../http/http-error.ts";
import { listen } from "../../testing/engine.ts";
import { eventually } from "../../testing/eventually.ts";
import { median, pairedShift } from "../../testing/stats.ts";
import { tempDir } from "../../testing/temp-dir.ts";

const KEY_A = "sk-team-a-0123456789abcdef";
const KEY_B = "sk-team-b-0123456789abcdef";

test("keyring: a key names its tenant, others and short keys do not; setKeys rotates and revokes", () => {
  const ring = new TenantKeyring();
  ring.setTenants([
    { name: "a", limits: {} },
    { name: "b", limits: {}, sharedPrefixNamespace: "common" },
  ]);
  ring.setKeys("a", [KEY_A, "short"]);
  ring.setKeys("b", [KEY_B]);
  assert.equal(ring.authenticate(KEY_A)?.name, "a");
  assert.equal(ring.authenticate(KEY_B)?.kvNamespace, "shared:common");
  assert.equal(ring.authenticate("short"), undefined);
  assert.equal(ring.authenticate(`${KEY_A}x`), undefined);
  ring.setKeys("a", ["sk-team-a-rotated-000000000"]);
  assert.equal(ring.authenticate(KEY_A), undefined, "revoked");
  assert.equal(ring.authenticate("sk-team-a-rotated-000000000")?.name, "a");
  ring.setTenants([{ name: "a", limits: {} }]);
  assert.equal(ring.authenticate(KEY_B), undefined, "a tenant removed takes its keys with it");
  assert.equal(kvNamespaceOf({ name: "a", limits: {} }), "tenant:a");
});

test("bearer header parsing", () => {
  assert.equal(bearerKey(`Bearer ${KEY_A}`), KEY_A);
  assert.equal(bearerKey(`bearer ${KEY_A}`), KEY_A);
  for (const bad of [undefined, "", "Basic abc", "Bearer", `Bearer ${KEY_A} extra`]) assert.equal(bearerKey(bad), undefined, String(bad));
});

test("limiter: requests, tokens and streams per tenant, Retry-After from the refill, split by routers", () => {
  let now = 0;
  let routers = 1;
  const limiter = new TenantLimiter({ now: () => now, share: () => routers });
  const limits = { requestsPerMinute: 2, tokensPerMinute: 100, concurrentStreams: 5 };
  limiter.admit("a", limits).release();
  limiter.admit("a", limits).release();
  assert.throws(() => limiter.admit("a", limits), (e: unknown) => e instanceof LimitExceeded && e.limit === "requests_per_minute" && e.retryAfterSeconds === 30);
  limiter.admit("b", limits).release(); // another tenant is not affected
  now = 30_000;
  const adm = limiter.admit("a", limits);
  adm.debitTokens(150);
  adm.release();
  now = 60_000;
  assert.throws(() => limiter.admit("a", limits), (e: unknown) => e instanceof LimitExceeded && e.limit === "tokens_per_minute" && e.retryAfterSeconds >= 1);
  const streams = { concurrentStreams: 2 };
  const held = [limiter.admit("c", streams), limiter.admit("c", streams)];
  assert.throws(() => limiter.admit("c", streams), (e: unknown) => e instanceof LimitExceeded && e.limit === "concurrent_streams");
  held[0]!.release();
  held[0]!.release(); // twice counts once
  limiter.admit("c", streams);
  routers = 2; // two routers: each holds half of every budget
  const half = { requestsPerMinute: 4 };
  limiter.admit("d", half);
  limiter.admit("d", half);
  assert.throws(() => limiter.admit("d", half), LimitExceeded);
});

test("access file: parsed with errors naming the field, re-read on change", async () => {
  assert.throws(() => parseAccess("tenants: [{name: Bad}]"), /tenants\[0\]\.name/);
  assert.throws(() => parseAccess("tenants: [{name: a, limits: {requestsPerMinute: 0}}]"), /tenants\[0\]\.limits\.requestsPerMinute/);
  assert.throws(() => parseAccess("tenants: [{name: a, limits: {rpm: 3}}]"), /limits\.rpm is not a limit/);
  assert.throws(() => parseAccess("tenants: [{name: a, keys: [short]}]"), /tenants\[0\]\.keys/);
  assert.throws(() => parseAccess("tenants: [{name: a}, {name: a}]"), /listed twice/);
  const dir = tempDir("llmfleet-access-");
  const path = join(dir, "access.yaml");
  writeFileSync(path, `tenants:\n  - name: a\n    keys: [${KEY_A}]\n`);
  const lines: string[] = [];
  using source = watchAccessFile(path, (l) => lines.push(l), 50);
  assert.equal(source.keyring.authenticate(KEY_A)?.name, "a");
  writeFileSync(`${path}.tmp`, `tenants:\n  - name: a\n    keys: [${KEY_B}]\n`);
  renameSync(`${path}.tmp`, path);
  await eventually(() => assert.equal(source.keyring.authenticate(KEY_A), undefined), { timeoutMs: 5000 });
  assert.equal(source.keyring.authenticate(KEY_B)?.name, "a");
  assert.ok(lines.every((l) => !l.includes(KEY_A) && !l.includes(KEY_B)), "keys never logged");
});

function echoApp(guard: express.RequestHandler): express.Express {
  const app = express();
  app.get("/health", (_req, res) => void res.json({ ok: true }));
  app.use(guard);
  app.all("/{*rest}", (_req, res) => void res.json({ identity: res.locals.identity, upstream: res.locals.upstreamHeaders }));
  app.use(errorHandler());
  return app;
}

test("router guard: 401 in OpenAI's shape, 429 with Retry-After and the limit, identity forwarded", async () => {
  const ring = new TenantKeyring();
  ring.setTenants([{ name: "a", limits: { requestsPerMinute: 1 } }]);
  ring.setKeys("a", [KEY_A]);
  const registry = new Registry();
  const guard = routerGuard({ keyring: ring, limiter: new TenantLimiter(), fleetToken: () => "fleet-token-0123456789", metrics: createTenantMetrics(registry) });
  await using app = await listen(echoApp(guard));
  assert.equal((await fetch(`${app.url}/health`)).status, 200);
  for (const auth of [undefined, "Bearer wrong-key-0123456789abc", `Basic ${KEY_A}`]) {
    const res = await fetch(`${app.url}/v1/models`, { headers: auth ? { authorization: auth } : {} });
    assert.equal(res.status, 401);
    assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer/);
    const body = (await res.json()) as { error: { code: string; type: string } };
    assert.equal(body.error.code, "invalid_api_key");
    assert.equal(body.error.type, "invalid_request_error");
  }
  const ok = await fetch(`${app.url}/v1/models`, { headers: { authorization: `Bearer ${KEY_A}`, [TENANT_HEADER]: "forged" } });
  const seen = (await ok.json()) as { identity: { tenant: string; kvNamespace: string }; upstream: Record<string, string> };
  assert.deepEqual(seen.identity, { tenant: "a", kvNamespace: "tenant:a" });
  assert.equal(seen.upstream[FLEET_TOKEN_HEADER], "fleet-token-0123456789");
  const over = await fetch(`${app.url}/v1/models`, { headers: { authorization: `Bearer ${KEY_A}` } });
  assert.equal(over.status, 429);
  assert.ok(Number(over.headers.get("retry-after")) >= 1);
  assert.equal(over.headers.get("x-llmfleet-limit"), "requests_per_minute");
  assert.equal(((await over.json()) as { error: { param: string } }).error.param, "requests_per_minute");
  const text = await registry.metrics();
  assert.match(text, /llmfleet_tenant_rejected_total\{tenant="",reason="invalid_api_key"\} 3/);
  assert.match(text, /llmfleet_tenant_rejected_total\{tenant="a",reason="requests_per_minute"\} 1/);
});

test("engine guard: no fleet token, 403 before the body; probes open; identity believed only with the token", async () => {
  await using app = await listen(echoApp(fleetGuard(fixedFleetToken("fleet-token-0123456789"))));
  assert.equal((await fetch(`${app.url}/health`)).status, 200);
  const forged = await fetch(`${app.url}/v1/completions`, { method: "POST", headers: { [TENANT_HEADER]: "a", [KV_NAMESPACE_HEADER]: "tenant:a" }, body: "{}" });
  assert.equal(forged.status, 403);
  assert.equal(((await forged.json()) as { error: { code: string } }).error.code, "fleet_token_required");
  const wrong = await fetch(`${app.url}/internal/prefill`, { method: "POST", headers: { [FLEET_TOKEN_HEADER]: "fleet-token-0123456780" } });
  assert.equal(wrong.status, 403);
  const right = await fetch(`${app.url}/internal/prefill`, { method: "POST", headers: { [FLEET_TOKEN_HEADER]: "fleet-token-0123456789", [KV_NAMESPACE_HEADER]: "tenant:a" } });
  assert.deepEqual(((await right.json()) as { identity: object }).identity, { tenant: "", kvNamespace: "tenant:a" });
  const bad = await fetch(`${app.url}/x`, { headers: { [FLEET_TOKEN_HEADER]: "fleet-token-0123456789", [KV_NAMESPACE_HEADER]: "Tenant A\u0000" } }).catch(() => undefined);
  assert.ok(!bad || bad.status === 400);
});

const OLD = "fleet-token-old-0123456789";
const NEW = "fleet-token-new-0123456789";

test("fleet token rotation: two pods see the Secret's updates at different times, no request is refused; a retired token lasts its grace only", async () => {
  const dir = tempDir("llmfleet-fleet-token-");
  // Each pod has its own copy of the Secret volume; the kubelet updates them at different times.
  const senderFile = join(dir, "sender");
  const receiverFile = join(dir, "receiver");
  const put = (file: string, text: string): void => {
    writeFileSync(`${file}.tmp`, text);
    renameSync(`${file}.tmp`, file); // a Secret volume is swapped, not written in place
  };
  put(senderFile, OLD);
  put(receiverFile, OLD);
  let clock = 0;
  const opts = { pollMs: 20, graceMs: 60_000, now: () => clock };
  using sender = fleetTokenSource(senderFile, opts);
  using receiver = fleetTokenSource(receiverFile, opts);
  await using app = await listen(echoApp(fleetGuard(receiver)));
  const call = async (): Promise<number> => (await fetch(`${app.url}/internal/prefill`, { method: "POST", headers: { [FLEET_TOKEN_HEADER]: sender.token() ?? "" } })).status;
  const tokenSeen = (src: { token: () => string | undefined }, want: string): Promise<void> => eventually(() => assert.equal(src.token(), want), { intervalMs: 10 });
  assert.equal(await call(), 200);
  // Step 1: the new token as a second line. The sender sees it first: it still sends the old one.
  put(senderFile, `${OLD}\n${NEW}\n`);
  await eventually(() => assert.ok(sender.accepts(NEW)), { intervalMs: 10 });
  assert.equal(sender.token(), OLD, "the first line is sent");
  assert.equal(await call(), 200);
  put(receiverFile, `${OLD}\n${NEW}\n`);
  await eventually(() => assert.ok(receiver.accepts(NEW)), { intervalMs: 10 });
  // Step 2: only the new token. The sender sees it first and sends it: the receiver accepts it (line 2).
  put(senderFile, NEW);
  await tokenSeen(sender, NEW);
  assert.equal(await call(), 200, "a pod ahead sends the new token to one still at step 1");
  // Now the receiver is ahead of a sender that still sends the old one: the grace period covers it.
  put(receiverFile, NEW);
  await tokenSeen(receiver, NEW);
  assert.ok(receiver.accepts(OLD), "a retired token is accepted during its grace period");
  const late = await fetch(`${app.url}/internal/prefill`, { method: "POST", headers: { [FLEET_TOKEN_HEADER]: OLD } });
  assert.equal(late.status, 200);
  assert.equal(await call(), 200);
  clock += 60_001;
  assert.ok(!receiver.accepts(OLD), "past its grace period the retired token is refused");
  assert.equal((await fetch(`${app.url}/internal/prefill`, { method: "POST", headers: { [FLEET_TOKEN_HEADER]: OLD } })).status, 403);
  assert.equal(await call(), 200);
  // A broken file (empty, a short token) keeps the tokens last read.
  put(receiverFile, "");
  put(receiverFile, "short\n");
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(receiver.token(), NEW);
  assert.equal(await call(), 200);
});

test("fleet token rotation: the KV store pod re-reads its token file without a restart", async () => {
  const dir = tempDir("llmfleet-kv-token-");
  const file = join(dir, "token");
  writeFileSync(file, OLD);
  const pod = await createKvStorePod({ blockTokens: 16, codec: "lossless", tenantSalt: "", tiers: [], fleetTokenFile: file });
  await using app = await listen(pod.app);
  try {
    const config = async (token: string): Promise<number> => (await fetch(`${app.url}/v1/kv/config`, { headers: { [FLEET_TOKEN_HEADER]: token } })).status;
    assert.equal(await config(OLD), 200);
    assert.equal(await config(NEW), 403);
    writeFileSync(`${file}.tmp`, NEW);
    renameSync(`${file}.tmp`, file);
    await eventually(async () => assert.equal(await config(NEW), 200), { timeoutMs: 10_000, intervalMs: 100 });
    assert.equal(await config(OLD), 200, "the retired token during its grace period");
  } finally {
    await pod[Symbol.asyncDispose]();
  }
});

test("KV sealing: round trip per namespace; another namespace or key fails authentication", () => {
  const sealer = new KvSealer(Buffer.alloc(32, 7));
  const plain = Buffer.from("kv state bytes ".repeat(100));
  const sealed = sealer.seal("tenant:a", "key1", plain);
  assert.ok(!sealed.includes(Buffer.from("kv state bytes")), "ciphertext holds no plaintext");
  assert.deepEqual(sealer.open("tenant:a", "key1", sealed), plain);
  assert.throws(() => sealer.open("tenant:b", "key1", sealed), KvSealError);
  assert.throws(() => sealer.open("tenant:a", "key2", sealed), KvSealError);
  assert.throws(() => new KvSealer(Buffer.alloc(8)), /32 bytes/);
});

test("pairedShift (the timing test's criterion): finds a shift exactly, and pairing cancels a drift the plain medians take for one", () => {
  // Load drifts from 20 to 80 ms across the run; cross[i] and miss[i] are measured next to each other.
  const drift = Array.from({ length: 50 }, (_, i) => 20 + (60 * i) / 49);
  const miss = drift.map((d, i) => d + (i % 3));
  assert.equal(pairedShift(miss.map((m) => m + 5), miss), 5);
  // The cross samples happen to fall where the machine was quieter (the first 40 rounds only).
  const cross = miss.slice(0, 40).map((m) => m + 0.5);
  const pairedMiss = miss.slice(0, 40);
  assert.ok(Math.abs(median(cross) - median(miss)) / median(miss) > 0.1, "the plain medians of unpaired samples differ by over 10 %");
  assert.equal(pairedShift(cross, pairedMiss), 0.5);
  assert.throws(() => pairedShift([1], [1, 2]), /one length/);
});
