import { test } from "node:test";
import assert from "node:assert/strict";
import { promptPrefix, UpstreamSet } from "./upstreams.ts";

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
});
