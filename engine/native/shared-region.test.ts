/**
 * A sequence state moved through a shared region (shared-region.h, addon-shared.cpp): one engine
 * exports its rows into a region it created, another opens the region by name and imports them;
 * only the headers pass through JavaScript. On this CPU the region is POSIX shared memory (the
 * `cuda` kind needs a GPU); the rows are rerouted by the same copy wrapper either way.
 * Real llama.cpp (the CPU addon, built on first use) on a tiny synthetic GGUF.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { ensureModel } from "../model/fetch.ts";
import { assertCloseLogits } from "../../testing/logits.ts";
import { loadNativeAddon, type NativeAddon, type NativeEngine, type SharedRegions } from "./binding.ts";

let addon: NativeAddon & SharedRegions;
let a: NativeEngine;
let b: NativeEngine;

before(async () => {
  const model = await ensureModel("synthetic://tiny");
  addon = (await loadNativeAddon()) as NativeAddon & SharedRegions;
  const options = { contextSize: 256, sequences: 2, batchSize: 64, threads: 1, flashAttention: true };
  [a, b] = [await addon.load(model, options), await addon.load(model, options)];
});
after(async () => {
  await a?.dispose();
  await b?.dispose();
});

const i32 = (...v: number[]): Int32Array => Int32Array.from(v);
const u8 = (...v: number[]): Uint8Array => Uint8Array.from(v);
const PROMPT = i32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);

test("a state's rows go through a shared region and only its headers through JavaScript: the importing engine reads the same logits", async () => {
  await a.step(i32(0), i32(0), i32(PROMPT.length), PROMPT, u8(0));
  const reference = await a.evalLogits(0, PROMPT.length, i32(13));
  a.seqRm(0, PROMPT.length, -1);
  const size = a.stateSizeOf!(0);
  const region = addon.kvRegionCreate(size, true);
  assert.equal(region.device, false, "no CUDA runtime on this machine: shared memory");
  assert.match(region.name, /^shm:\/llmfleet-kv-\d+-\d+-[0-9a-f]+-\d+$/);
  const opened = addon.kvRegionOpen(region.name, size);
  try {
    const shared = await a.stateGetShared!(0, region.handle);
    assert.equal(shared.size, size);
    const rowBytes = shared.rows.reduce((n, v, i) => (i % 2 === 1 ? n + v : n), 0);
    assert.equal(shared.meta.length + rowBytes, size, "headers and rows make the whole state");
    assert.ok(shared.meta.length < size / 10, `the headers (${shared.meta.length} bytes) are a small part of the state (${size})`);
    // Into the other engine's sequence 1, from its own mapping of the region.
    const read = await b.stateSetShared!(1, opened, shared.size, shared.meta, shared.rows);
    assert.equal(read, size);
    assert.equal(b.seqPosMax(1), PROMPT.length - 1);
    assertCloseLogits(await b.evalLogits(1, PROMPT.length, i32(13)), reference);
    b.seqRm(1, -1, -1);

    // The rows come from the region: with another prompt's rows there, the same headers read otherwise.
    const other = i32(21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32);
    a.seqRm(0, -1, -1);
    await a.step(i32(0), i32(0), i32(other.length), other, u8(0));
    a.seqRm(0, other.length, -1);
    await a.stateGetShared!(0, region.handle);
    await b.stateSetShared!(1, opened, shared.size, shared.meta, shared.rows);
    const moved = await b.evalLogits(1, PROMPT.length, i32(13));
    assert.throws(() => assertCloseLogits(moved, reference), /logits moved/);
    b.seqRm(1, -1, -1);

    // Headers that do not match the rows are refused before llama.cpp reads anything.
    await assert.rejects(b.stateSetShared!(1, opened, shared.size, shared.meta.subarray(1), shared.rows), /meta and rows do not describe a state/);
    assert.throws(() => b.stateSetShared!(1, opened, size + 1, shared.meta, shared.rows), /the state is \d+ bytes and the region \d+/);
  } finally {
    addon.kvRegionClose(opened);
    addon.kvRegionClose(region.handle);
    a.seqRm(0, -1, -1);
  }
  // The creator's close unlinked it; closing twice is a no-op.
  assert.throws(() => addon.kvRegionOpen(region.name, size), /kvRegionOpen: shm_open \/llmfleet-kv-\d+-\d+-[0-9a-f]+-\d+: No such file or directory/);
  addon.kvRegionClose(region.handle);
  assert.throws(() => addon.kvRegionOpen("shm:../etc/passwd", 8), /not a region name/);
  assert.throws(() => addon.kvRegionOpen("cuda:00", 8), /CUDA runtime/);
});

/** A child process that makes a region of 64 KiB, prints its name, and ends as `end` says. */
function childRegion(end: "exit" | "kill"): { status: number | null; signal: string | null; name: string; stderr: string } {
  const script = `
    import { loadNativeAddon } from ${JSON.stringify(new URL("./binding.ts", import.meta.url).pathname)};
    const addon = await loadNativeAddon();
    process.stdout.write(addon.kvRegionCreate(65536, false).name);
    ${end === "exit" ? "process.exit(0);" : 'process.kill(process.pid, "SIGKILL");'}`;
  const c = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", env: process.env });
  return { status: c.status, signal: c.signal, name: c.stdout, stderr: c.stderr };
}

const shmFile = (name: string): string => `/dev/shm${name.slice("shm:".length)}`;

test("a process that ends unlinks the shared memory it made; one killed outright leaves it, and the next process of its pid namespace unlinks it", () => {
  const ended = childRegion("exit");
  assert.equal(ended.status, 0, ended.stderr);
  assert.match(ended.name, /^shm:\/llmfleet-kv-/);
  assert.equal(existsSync(shmFile(ended.name)), false, `${ended.name} is still in /dev/shm`);

  const killed = childRegion("kill");
  assert.equal(killed.signal, "SIGKILL");
  assert.equal(existsSync(shmFile(killed.name)), true, "no exit ran: the name is left behind");
  const next = childRegion("exit");
  assert.equal(next.status, 0, next.stderr);
  assert.equal(existsSync(shmFile(killed.name)), false, "the next process's first region unlinked the dead one's");
});
