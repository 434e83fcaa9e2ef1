/**
 * The native hand-off listener the kv-stream tests share: the addon and one listener on loopback
 * for the file's tests (64 MiB staged, 60 s TTL, a sender silent 1 s dropped), opened before them
 * and closed after.
 */
import { after, before } from "node:test";
import assert from "node:assert/strict";
import { kvStreamAddon, type KvStreamAddon } from "../engine/pd/kv-transport.ts";

export interface KvTestListener {
  kv: KvStreamAddon;
  port: number;
  handle: number;
}

/** Registers before/after hooks; the returned object is filled in before the first test. */
export function useKvListener(): KvTestListener {
  const l = {} as KvTestListener;
  before(async () => {
    const addon = await kvStreamAddon();
    assert.ok(addon, "the native addon exports the kv-stream functions");
    l.kv = addon;
    ({ port: l.port, handle: l.handle } = addon.kvListen("127.0.0.1", 0, { maxBytes: 64 << 20, ttlMs: 60_000, idleMs: 1_000 }));
  });
  after(() => l.kv?.kvClose(l.handle));
  return l;
}
