/**
 * Hostile traffic against every role's server (router, aggregated, prefill, decode, kvstore; real
 * engine processes, tiny synthetic model): each attempt is cut off by a limit or answered 4xx —
 * never a 5xx, a hang or a crash — and a tenant is served throughout. The request *body* rules
 * (content type, depth, parameter types) are the OpenAI-API issue's; this is the transport.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { startSecureFleet, type FleetProcess, type SecureFleet } from "../../testing/secure-fleet.ts";

const KEY = `sk-ok-${randomBytes(12).toString("hex")}`;
let fleet: SecureFleet;
let targets: FleetProcess[];
before(async () => {
  fleet = await startSecureFleet({ model: "synthetic://tiny", access: `tenants:\n  - name: ok\n    keys: [${KEY}]\n` });
  targets = [fleet.router, fleet.aggregated, fleet.prefill, fleet.decode, fleet.kvstore];
});
after(async () => {
  await fleet?.[Symbol.asyncDispose]();
});

/** A tenant's request through the router: must be 200 whatever else is going on. */
async function served(): Promise<number> {
  const res = await fetch(`${fleet.router.url}/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ prompt: "hello world", max_tokens: 2 }),
    signal: AbortSignal.timeout(30_000),
  });
  await res.text();
  return res.status;
}

function hostPort(p: FleetProcess): { host: string; port: number } {
  const u = new URL(p.url);
  return { host: u.hostname, port: Number(u.port) };
}

function open(p: FleetProcess): Promise<Socket> {
  return new Promise((res, rej) => {
    const s = connect(hostPort(p), () => res(s));
    s.on("error", rej);
  });
}

/** Resolves with the ms until the server closed the socket (or rejects after `withinMs`). */
function closedWithin(s: Socket, withinMs: number): Promise<number> {
  const t0 = performance.now();
  return new Promise((res, rej) => {
    if (s.destroyed || s.readyState === "closed") return res(0);
    const timer = setTimeout(() => rej(new Error(`connection still open after ${withinMs} ms`)), withinMs);
    s.on("error", () => undefined);
    s.once("close", () => {
      clearTimeout(timer);
      res(performance.now() - t0);
    });
  });
}

/** Status of a raw HTTP exchange (the first line the server answers). */
async function rawStatus(p: FleetProcess, request: string | Buffer): Promise<number> {
  const s = await open(p);
  return new Promise((res, rej) => {
    let got = "";
    s.on("data", (d: Buffer) => {
      got += d.toString("latin1");
      const m = /^HTTP\/1\.1 (\d{3})/.exec(got);
      if (m) {
        s.destroy();
        res(Number(m[1]));
      }
    });
    s.on("error", () => undefined);
    s.on("close", () => rej(new Error(`closed without an answer: ${got.slice(0, 100)}`)));
    s.write(request);
  });
}

test("slow-loris and silent connections are cut off by the headers timeout, on every role", async () => {
  const slow = await Promise.all(
    targets.map(async (p) => {
      const s = await open(p);
      s.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\n`);
      const drip = setInterval(() => s.writable && s.write("X"), 300);
      try {
        return await closedWithin(s, 8_000);
      } finally {
        clearInterval(drip);
      }
    }),
  );
  const silent = await Promise.all(targets.map(async (p) => closedWithin(await open(p), 8_000)));
  process.stderr.write(`slow-loris cut after ${slow.map((ms) => Math.round(ms)).join(", ")} ms; silent after ${silent.map((ms) => Math.round(ms)).join(", ")} ms\n`);
  const t0 = performance.now();
  assert.equal(await served(), 200);
  process.stderr.write(`then a tenant's request took ${Math.round(performance.now() - t0)} ms\n`);
});

test("a thousand idle connections to the router: the tenant is served, and they are closed", async () => {
  // In batches under the listen backlog (511): a connect past a full accept queue completes on the
  // client while the kernel drops it on the server, which then never holds it.
  const sockets: Socket[] = [];
  for (let b = 0; b < 5; b++) sockets.push(...(await Promise.all(Array.from({ length: 200 }, () => open(fleet.router)))));
  const closing = sockets.map((s) => closedWithin(s, 20_000));
  assert.equal(await served(), 200);
  // A connect the kernel completed on the client but dropped from a momentarily full accept queue
  // is never held by the server, so it cannot be closed by it either (seen once in CI: one of a
  // thousand). Every connection the router held must be closed; allow that 1 % were never held.
  const results = await Promise.allSettled(closing);
  const stillOpen = results.filter((r) => r.status === "rejected").length;
  assert.ok(stillOpen <= sockets.length / 100, `${stillOpen} of ${sockets.length} idle connections still open after 20 s`);
  for (const s of sockets) s.destroy();
  assert.equal(await served(), 200);
});

test("oversized headers get 431; oversized bodies 413 (or 401/403 before the body is read)", async () => {
  const big = `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(32 * 1024)}\r\n\r\n`;
  for (const p of targets) assert.equal(await rawStatus(p, big), 431, p.name);
  const body = JSON.stringify({ prompt: "x".repeat(9 * 1024 * 1024) });
  const post = async (url: string, headers: Record<string, string>): Promise<number> => {
    const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body }).catch(() => undefined);
    await res?.text().catch(() => undefined);
    return res?.status ?? 0; // 0: the server closed the connection while the body was still sent
  };
  assert.equal(await post(`${fleet.router.url}/v1/completions`, { authorization: `Bearer ${KEY}` }), 413);
  assert.ok([401, 0].includes(await post(`${fleet.router.url}/v1/completions`, { authorization: "Bearer nope-0123456789abcdef" })));
  for (const p of [fleet.aggregated, fleet.prefill]) assert.ok([403, 0].includes(await post(`${p.url}/v1/completions`, {})), p.name);
  assert.equal(await post(`${fleet.aggregated.url}/v1/completions`, { "x-llmfleet-fleet-token": fleet.fleetToken }), 413);
  assert.equal(await served(), 200);
});

test("unknown paths and methods are 4xx on every role", async () => {
  for (const p of targets) {
    for (const [method, path] of [
      ["GET", "/nope"],
      ["DELETE", "/v1/completions"],
      ["PUT", "/internal/kv/x"],
      ["OPTIONS", "/"],
      ["PROPFIND", "/"],
    ] as const) {
      const status = (await fetch(`${p.url}${path}`, { method })).status;
      assert.ok(status >= 400 && status < 500, `${p.name} ${method} ${path}: ${status}`);
    }
    const bogus = await rawStatus(p, "FOO / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.ok(bogus >= 400 && bogus < 500, `${p.name} FOO: ${bogus}`);
    const smuggle = await rawStatus(p, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert.ok(smuggle >= 400 && smuggle < 500, `${p.name} CL+TE: ${smuggle}`);
  }
});

test("invalid keys at a high rate are all 401 while the tenant is served", async () => {
  const statuses = new Map<number, number>();
  const attacker = Array.from({ length: 32 }, async () => {
    for (let i = 0; i < 40; i++) {
      const res = await fetch(`${fleet.router.url}/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer sk-${randomBytes(16).toString("hex")}`, "content-type": "application/json" },
        body: '{"prompt":"x"}',
      });
      await res.text();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    }
  });
  const tenant = Array.from({ length: 5 }, () => served());
  const ok = await Promise.all(tenant);
  await Promise.all(attacker);
  assert.deepEqual([...statuses], [[401, 1280]]);
  assert.ok(ok.every((s) => s === 200));
});

test("after all of it every process is alive and serving, and none answered 5xx", async () => {
  for (const p of fleet.all) assert.equal(p.child.exitCode, null, `${p.name} exited`);
  assert.equal(await served(), 200);
  const metrics = await (await fetch(`${fleet.router.url}/metrics`)).text();
  assert.ok(!/llmfleet_requests_total\{status="5\d\d"/.test(metrics), "the router answered no 5xx");
  for (const p of [fleet.aggregated, fleet.prefill, fleet.decode]) {
    const m = await (await fetch(`${p.url}/metrics`)).text();
    assert.ok(!/llmfleet_requests_total\{status="5\d\d"/.test(m), `${p.name} answered no 5xx`);
  }
});
