import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fillModelCache, fillRecordPath, waitForFilledModel } from "./filled-cache.ts";

function cache(): { root: string; uri: string; checksum: string; file: string; [Symbol.dispose](): void } {
  const root = mkdtempSync(join(tmpdir(), "llmfleet-filled-"));
  const before = process.env.LLMFLEET_CACHE;
  process.env.LLMFLEET_CACHE = root;
  mkdirSync(join(root, "models"));
  const file = join(root, "models", "m.gguf");
  const bytes = Buffer.from("GGUF not really a model, but bytes with a digest");
  writeFileSync(file, bytes);
  return {
    root,
    file,
    uri: `file://${file}`,
    checksum: `sha256:${createHash("sha256").update(bytes).digest("hex")}`,
    [Symbol.dispose]() {
      rmSync(root, { recursive: true, force: true });
      if (before === undefined) delete process.env.LLMFLEET_CACHE;
      else process.env.LLMFLEET_CACHE = before;
    },
  };
}

test("a pod waits for the fill record and then gets the file it names, relative to wherever the cache is mounted", async () => {
  using c = cache();
  let resolved: string | undefined;
  const waiting = waitForFilledModel(c.uri, { checksum: c.checksum, pollMs: 20 }).then((p) => (resolved = p));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(resolved, undefined, "no fill record yet: still waiting");
  const record = await fillModelCache(c.uri, c.checksum);
  assert.equal(record.file, "m.gguf");
  assert.equal(record.checksum, c.checksum);
  assert.equal(await waiting, c.file);
});

test("a fill whose file has another digest fails and leaves no record: pods keep waiting", async () => {
  using c = cache();
  await assert.rejects(fillModelCache(c.uri, `sha256:${"0".repeat(64)}`), /has sha256:[0-9a-f]{64}, the Model's spec.source.checksum says sha256:0{64}/);
  assert.equal(existsSync(fillRecordPath(c.uri)), false);
  await assert.rejects(waitForFilledModel(c.uri, { pollMs: 10, timeoutMs: 100 }), /no fill of file:\/\/.* after 100 ms/);
});

test("a pod refuses a record of another digest, and a file cut short since the fill", async () => {
  using c = cache();
  await fillModelCache(c.uri);
  await assert.rejects(waitForFilledModel(c.uri, { checksum: `sha256:${"b".repeat(64)}` }), /fill of file:.* has sha256:[0-9a-f]{64}, --model-checksum says sha256:b{64}/);
  writeFileSync(c.file, "short");
  await assert.rejects(waitForFilledModel(c.uri, { checksum: c.checksum }), /has 5 bytes, its fill record says \d+/);
});
