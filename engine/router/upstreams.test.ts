import { test } from "node:test";
import assert from "node:assert/strict";
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promptPrefix, UpstreamSet } from "./upstreams.ts";
import { parseUpstreamsFile, watchUpstreamsFile } from "./upstreams-file.ts";
import { eventually } from "../../testing/eventually.ts";
import { tempDir } from "../../testing/temp-dir.ts";

const PODS = ["http://a", "http://b", "http://c", "http://d"];

test("round-robin rotates through every pod", () => {
  const set = new UpstreamSet(PODS, "round-robin");
  assert.deepEqual(
    [0, 1, 2, 3, 4].map(() => set.ranked()[0]),
    ["http://a", "http://b", "http://c", "http://d", "http://a"],
  );
});

test("least-loaded prefers the pod with fewest requests in flight", async () => {
  const set = new UpstreamSet(PODS, "least-loaded");
  let release: () => void = () => undefined;
  const busy = set.track("http://a", () => new Promise<void>((r) => (release = r)));
  for (let i = 0; i < 8; i++) assert.notEqual(set.ranked()[0], "http://a");
  release();
  await busy;
});

test("prefix-aware sends the same prefix to the same pod and spreads different ones", () => {
  const set = new UpstreamSet(PODS, "prefix-aware");
  const doc = "You are a helpful assistant. Here is the contract: ".repeat(30);
  const first = set.ranked(doc + "question one")[0];
  for (let i = 0; i < 10; i++) assert.equal(set.ranked(doc + `question ${i}`)[0], first);
  const chosen = new Set(Array.from({ length: 40 }, (_, i) => set.ranked(`document ${i} `.repeat(100))[0]));
  assert.ok(chosen.size >= 3, `40 different prefixes should use most pods, used ${chosen.size}`);
});

test("prefix-aware gives way to load when the preferred pod is much busier", async () => {
  const set = new UpstreamSet(PODS, "prefix-aware", 2);
  const doc = "shared system prompt ".repeat(60);
  const preferred = set.ranked(doc)[0] ?? "";
  const releases: Array<() => void> = [];
  const busy = [1, 2, 3].map(() => set.track(preferred, () => new Promise<void>((r) => releases.push(r))));
  assert.notEqual(set.ranked(doc)[0], preferred);
  for (const r of releases) r();
  await Promise.all(busy);
  assert.equal(set.ranked(doc)[0], preferred);
});

test("promptPrefix reads completions and chat bodies", () => {
  assert.equal(promptPrefix({ prompt: "hello" }), "hello");
  assert.match(promptPrefix({ messages: [{ role: "user", content: "hi" }] }), /"content":"hi"/);
  assert.equal(promptPrefix({}), "");
  // With documents the prompt starts with the first one: requests sharing it share the key, whatever follows.
  const withA = (rest: object): string => promptPrefix({ documents: ["doc A", "doc B"], ...rest });
  assert.equal(withA({ prompt: "q1" }), promptPrefix({ documents: [{ text: "doc A" }], messages: [{ role: "user", content: "q2" }] }));
  assert.notEqual(withA({ prompt: "q1" }), promptPrefix({ documents: ["doc C", "doc A"], prompt: "q1" }));
  assert.notEqual(withA({ prompt: "q1" }), promptPrefix({ prompt: "doc A" }), "a prompt that is a document's text is not the document");
});

test("replacing the pods: a new one gets requests, a removed one gets none and shows its requests in flight until they finish", async () => {
  const set = new UpstreamSet(["http://a"], "least-loaded");
  let release: () => void = () => undefined;
  const busy = set.track("http://a", () => new Promise<void>((r) => (release = r)));
  set.replace(["http://b"]);
  assert.deepEqual(set.urls, ["http://b"]);
  for (let i = 0; i < 4; i++) assert.deepEqual(set.ranked(), ["http://b"]);
  assert.deepEqual(set.inFlightByUrl(), { "http://a": 1, "http://b": 0 });
  release();
  await busy;
  assert.deepEqual(set.inFlightByUrl(), { "http://b": 0 }, "a drained pod leaves the set");
});

test("the upstreams file is applied when it changes, and a broken one keeps the lists in use", async (t) => {
  const stderr = t.mock.method(process.stderr, "write");
  const dir = tempDir("llmfleet-upstreams-");
  const path = join(dir, "upstreams.json");
  const write = (body: string): void => {
    writeFileSync(`${path}.tmp`, body);
    renameSync(`${path}.tmp`, path);
  };
  write(JSON.stringify({ generation: 1, prefill: ["http://p1/"], decode: ["http://d1"] }));
  const watched = watchUpstreamsFile(path, { prefill: ["http://boot"], decode: ["http://boot"], aggregated: [] }, "least-loaded", 20);
  try {
    assert.deepEqual(watched.upstreams.snapshot(), { generation: 1, prefill: { "http://p1": 0 }, decode: { "http://d1": 0 }, aggregated: {} });
    write(JSON.stringify({ generation: 2, prefill: ["http://p1", "http://p2"], decode: ["http://d1"] }));
    await eventually(() => assert.equal(watched.upstreams.generation, 2), { timeoutMs: 3000, intervalMs: 20, message: "the rewritten file is read" });
    assert.deepEqual(watched.upstreams.prefill.urls, ["http://p1", "http://p2"]);
    write("{not json");
    // Waits for the watcher to have read the broken file, not for a guessed number of polls.
    const refused = (): boolean => stderr.mock.calls.some((c) => String(c.arguments[0]).includes("keeping generation 2"));
    await eventually(() => assert.ok(refused(), "the broken file is read and refused"), { timeoutMs: 3000, intervalMs: 20 });
    assert.equal(watched.upstreams.generation, 2);
    assert.deepEqual(watched.upstreams.prefill.urls, ["http://p1", "http://p2"]);
  } finally {
    watched[Symbol.dispose]();
  }
  assert.throws(() => parseUpstreamsFile('{"generation": 1, "prefill": "http://p"}'), /prefill must be a list of URLs/);
});

test("prefix-aware ranks alike on every router replica: a function of the pods and the prefix alone, whatever the pods' order", () => {
  const pods = Array.from({ length: 100 }, (_, i) => `http://10.0.${i >> 4}.${i}:8000`);
  const a = new UpstreamSet(pods, "prefix-aware");
  const b = new UpstreamSet([...pods].reverse(), "prefix-aware");
  for (let i = 0; i < 200; i++) {
    const prefix = `system prompt ${i} `.repeat(20);
    assert.equal(a.ranked(prefix)[0], b.ranked(prefix)[0], prefix.slice(0, 20));
  }
});

test("prefix-aware spreads prefixes evenly and moves only a removed pod's prefixes", () => {
  const pods = Array.from({ length: 10 }, (_, i) => `http://pod-${i}:8000`);
  const set = new UpstreamSet(pods, "prefix-aware");
  const prefixes = Array.from({ length: 2000 }, (_, i) => `tenant ${i % 37} document ${i}`);
  const before = new Map(prefixes.map((p) => [p, set.ranked(p)[0]]));
  const counts = new Map<string, number>();
  for (const u of before.values()) counts.set(u ?? "", (counts.get(u ?? "") ?? 0) + 1);
  for (const [u, n] of counts) assert.ok(n > 120 && n < 280, `${u}: ${n} of 2000 prefixes`);
  set.replace(pods.filter((u) => u !== "http://pod-3:8000"));
  const moved = prefixes.filter((p) => before.get(p) !== "http://pod-3:8000" && set.ranked(p)[0] !== before.get(p));
  assert.equal(moved.length, 0, "prefixes of the pods that stayed stay put");
});
