/**
 * The memory this process may use: its cgroup's limit (a Kubernetes container's memory limit) where
 * one is set, else the machine's. The budgets of KV buffers are fractions of it: `os.totalmem()`
 * alone is the node's memory, and a pod sized at a few GiB on a large node would hold buffers past
 * its limit and be OOM-killed.
 */
import { readFileSync } from "node:fs";
import { totalmem } from "node:os";

/** cgroup v2, then v1. */
const LIMIT_FILES = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"];

/** The cgroup's memory limit in bytes, or undefined when there is none ("max", v1's huge value, no file). */
export function cgroupMemoryLimit(read: (path: string) => string = (p) => readFileSync(p, "utf8")): number | undefined {
  for (const path of LIMIT_FILES) {
    let text: string;
    try {
      text = read(path).trim();
    } catch {
      continue;
    }
    if (text === "max") return undefined;
    const n = Number(text);
    // cgroup v1 writes "no limit" as the largest page-aligned int64 (~9.2e18).
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  }
  return undefined;
}

/** The smaller of the cgroup's limit and the machine's memory. */
export function usableMemory(limit: number | undefined = cgroupMemoryLimit(), machine: number = totalmem()): number {
  return limit === undefined ? machine : Math.min(limit, machine);
}

/**
 * The host pool's cap (engine/native/src/host-pool.h: page-locked blocks kept for the next KV
 * states) unless LLMFLEET_HOST_POOL_BYTES says otherwise: a quarter of the usable memory, at most
 * 4 GiB (what the pool kept before it looked at the limit). Set in the environment before the pool
 * first allocates, which reads it then.
 */
export function defaultHostPoolBytes(usable: number = usableMemory()): number {
  return Math.min(4 * 2 ** 30, Math.floor(usable / 4));
}

export function applyHostPoolDefault(env: NodeJS.ProcessEnv = process.env, usable?: number): void {
  if (env.LLMFLEET_HOST_POOL_BYTES === undefined) env.LLMFLEET_HOST_POOL_BYTES = String(defaultHostPoolBytes(usable));
}
