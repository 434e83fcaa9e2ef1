/** The memory budgets' base (engine/memory.ts): a container's cgroup limit, else the machine's memory. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { applyHostPoolDefault, cgroupMemoryLimit, defaultHostPoolBytes, usableMemory } from "./memory.ts";

const GiB = 2 ** 30;
const files = (map: Record<string, string>) => (path: string): string => {
  const text = map[path];
  if (text === undefined) throw new Error(`ENOENT: ${path}`);
  return text;
};

test("the cgroup's limit is read from v2, else v1; no limit reads as none", () => {
  assert.equal(cgroupMemoryLimit(files({ "/sys/fs/cgroup/memory.max": "2147483648\n" })), 2 * GiB);
  assert.equal(cgroupMemoryLimit(files({ "/sys/fs/cgroup/memory.max": "max\n" })), undefined);
  assert.equal(cgroupMemoryLimit(files({ "/sys/fs/cgroup/memory/memory.limit_in_bytes": "1073741824" })), GiB);
  assert.equal(cgroupMemoryLimit(files({ "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712" })), undefined, "v1's no-limit value");
  assert.equal(cgroupMemoryLimit(files({})), undefined);
  assert.equal(cgroupMemoryLimit(files({ "/sys/fs/cgroup/memory.max": "garbage" })), undefined);
});

test("budgets follow the smaller of the limit and the machine: a 2 GiB pod on a 128 GiB node keeps a 512 MiB pool", () => {
  assert.equal(usableMemory(2 * GiB, 128 * GiB), 2 * GiB);
  assert.equal(usableMemory(undefined, 128 * GiB), 128 * GiB);
  assert.equal(usableMemory(256 * GiB, 128 * GiB), 128 * GiB);
  assert.equal(defaultHostPoolBytes(2 * GiB), 512 * 2 ** 20);
  assert.equal(defaultHostPoolBytes(128 * GiB), 4 * GiB, "at most the 4 GiB it kept before");
  const env: NodeJS.ProcessEnv = {};
  applyHostPoolDefault(env, 2 * GiB);
  assert.equal(env.LLMFLEET_HOST_POOL_BYTES, String(512 * 2 ** 20));
  const set: NodeJS.ProcessEnv = { LLMFLEET_HOST_POOL_BYTES: "123" };
  applyHostPoolDefault(set, 2 * GiB);
  assert.equal(set.LLMFLEET_HOST_POOL_BYTES, "123", "an operator's setting stays");
});
