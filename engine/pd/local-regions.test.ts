/**
 * The local path's memory (local-regions.ts) with the real addon's regions (POSIX shared memory on
 * this CPU): a decode pod's regions lent one hand-off at a time, reused, held while staged, given
 * back after a lend that was never staged, within their cap; a prefill pod's mappings, reused by
 * name and closed past their byte bound.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { kvStreamAddon } from "./kv-transport.ts";
import { LocalRegions, nodeIdentity, RegionMappings } from "./local-regions.ts";
import type { SharedRegions } from "../native/binding.ts";

const MiB = 2 ** 20;
const regions = async (): Promise<SharedRegions> => (await kvStreamAddon()) as unknown as SharedRegions;

test("the node identity is the kernel's boot id, the same for every process of this machine", () => {
  assert.match(nodeIdentity(), /^[0-9a-f-]{36}$/);
  assert.equal(nodeIdentity(), nodeIdentity());
});

test("regions are lent one hand-off at a time, reused when free, held while staged, and none past the cap", async (t) => {
  const addon = await regions();
  const pool = new LocalRegions(addon, 8 * MiB, true);
  t.after(() => pool.close());
  assert.equal(pool.device, true, "asked; the addon makes shared memory where it has no CUDA runtime");
  const a = pool.reserve(2 * MiB)!;
  assert.match(a.name, /^shm:\//);
  assert.ok(a.bytes >= 2 * MiB);
  const b = pool.reserve(2 * MiB)!;
  assert.notEqual(b.name, a.name, "a lent region is not lent twice");
  assert.equal(pool.reserve(4 * MiB), undefined, "past the cap while both are lent");
  assert.ok(pool.hold(a.name), "staged: held");
  pool.release(a.name);
  assert.equal(pool.reserve(2 * MiB)!.name, a.name, "a free region of the size is lent again");
  assert.equal(pool.hold("shm:/not-lent"), undefined);
  // Free regions make room for a larger one.
  pool.release(a.name);
  pool.release(b.name);
  const big = pool.reserve(6 * MiB)!;
  assert.ok(big.bytes >= 6 * MiB);
  assert.ok(pool.bytes <= 8 * MiB, `${pool.bytes} bytes made, cap 8 MiB`);
  // What a prefill pod mapped reads what the decode pod's region holds: the same memory.
  const mapped = addon.kvRegionOpen(big.name, big.bytes);
  addon.kvRegionClose(mapped);
});

test("a region lent for a hand-off that was never staged comes back after 30 s", async (t) => {
  t.mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
  const pool = new LocalRegions(await regions(), 4 * MiB, false);
  t.after(() => pool.close());
  const a = pool.reserve(3 * MiB)!;
  assert.equal(pool.reserve(3 * MiB), undefined, "lent");
  t.mock.timers.tick(30_001);
  assert.equal(pool.reserve(3 * MiB)!.name, a.name, "back and lent again");
  pool.hold(a.name);
  t.mock.timers.tick(60_000);
  assert.equal(pool.reserve(3 * MiB), undefined, "a staged one is held until released");
});

test("a prefill pod's mappings are reused by name, and the least recently used closed past their byte bound", async (t) => {
  const addon = await regions();
  const pool = new LocalRegions(addon, 16 * MiB, false);
  t.after(() => pool.close());
  const [a, b, c] = [pool.reserve(2 * MiB)!, pool.reserve(2 * MiB)!, pool.reserve(2 * MiB)!];
  const maps = new RegionMappings(addon, 5 * MiB);
  t.after(() => maps.close());
  const ha = maps.map(a.name, a.bytes);
  assert.equal(maps.map(a.name, a.bytes), ha, "mapped once");
  maps.map(b.name, b.bytes);
  maps.map(a.name, a.bytes); // a is now the most recently used
  maps.map(c.name, c.bytes); // past 5 MiB: b goes
  assert.ok(maps.bytes <= 5 * MiB);
  assert.equal(maps.map(a.name, a.bytes), ha, "a kept");
  assert.throws(() => maps.map("shm:/llmfleet-kv-0-0", MiB), /No such file or directory/);
});
