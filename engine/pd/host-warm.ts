/**
 * The host pool's warmed region (engine/native/src/host-pool.h): page-locked at a pod's start, so
 * that the first KV states a pod exports, receives or loads are not page-locked on a request's
 * path: page-locking is slower than moving the state over loopback (BENCHMARKS.md, the host pool),
 * and the pool otherwise only reuses blocks of the sizes it has already seen.
 */
import type { KvPoolStats, KvStreamAddon } from "./kv-transport.ts";

/** auto's most: three quarters of the pool's cap, at most this. */
export const HOST_WARM_AUTO_MAX = 3 * 2 ** 30;

/**
 * The bytes to warm: `setting` as given (0: none); auto: on a page-locked (GPU) pool of a pod that
 * moves KV states (a KV store, a P/D role), three quarters of the pool's cap, at most
 * HOST_WARM_AUTO_MAX; else 0 (a CPU pod's heap blocks cost little to fault in, and it would hold
 * the memory for nothing). Three states of a full 8K context of a 7B f16 model: a write-back holds
 * its export and its blocks' copy while a load stages a third (two GiB, session 25's auto, was
 * full then, and the load page-locked its 31–46 blocks on the request's path: 2.5–3.1× recompute).
 */
export function hostWarmBytes(setting: number | "auto", pool: Pick<KvPoolStats, "pinned" | "capBytes"> | undefined, movesStates: boolean): number {
  if (setting !== "auto") return setting;
  if (!pool?.pinned || !movesStates) return 0;
  return Math.min(HOST_WARM_AUTO_MAX, Math.floor((pool.capBytes * 3) / 4));
}

/** Warms the pool (kvPoolWarm) and says what it took; a failure is logged and the pod starts without it. */
export async function warmHostPool(
  addon: KvStreamAddon | undefined,
  setting: number | "auto",
  movesStates: boolean,
  log: (line: string) => void,
): Promise<void> {
  if (!addon?.kvPoolWarm) return;
  const bytes = hostWarmBytes(setting, addon.kvPoolStats?.(), movesStates);
  if (bytes <= 0) return;
  try {
    const w = await addon.kvPoolWarm(bytes);
    log(`host pool: ${(w.bytes / 2 ** 20).toFixed(0)} MiB for KV states ${w.pinned ? "page-locked" : "faulted in"} in ${w.seconds.toFixed(2)} s`);
  } catch (err) {
    log(`host pool: not warmed (${(err as Error).message}); KV states page-lock their memory as they come`);
  }
}
