import { test } from "node:test";
import assert from "node:assert/strict";
import type { KubeClient } from "../../lib/kube/client.ts";
import { InvalidSpecError } from "../plan/invalid-spec.ts";
import { Manager } from "./manager.ts";
import { createOperatorMetrics } from "./metrics.ts";

/** A manager without informers: it never calls the API server, so it needs no client. */
function managerThrowing(err: Error): { manager: Manager; calls: () => number; logs: string[] } {
  const manager = new Manager(undefined as unknown as KubeClient, createOperatorMetrics(), "test");
  const logs: string[] = [];
  manager.log = (msg) => logs.push(msg);
  let calls = 0;
  manager.register("PrefillPool", () => {
    calls++;
    return Promise.reject(err);
  });
  return { manager, calls: () => calls, logs };
}

test("an InvalidSpecError ends the pass for good; any other error is retried with backoff", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const settle = (): Promise<void> => new Promise((r) => setImmediate(r));
  const cases: Array<[string, Error, number, RegExp]> = [
    ["invalid spec", new InvalidSpecError("no node can hold a replica"), 1, /invalid spec, not retried until it changes: no node can hold a replica/],
    ["transient error", new Error("connection reset"), 3, /failed, retrying in \d+ ms: Error: connection reset/],
  ];
  for (const [what, err, wantCalls, wantLog] of cases) {
    const { manager, calls, logs } = managerThrowing(err);
    const workers = manager.runWorkers(1);
    manager.queue.add("PrefillPool/ns/p");
    for (let i = 0; i < 2; i++) {
      await settle();
      t.mock.timers.tick(60_000); // past any backoff
    }
    await settle();
    manager.stop();
    await workers;
    assert.equal(calls(), wantCalls, what);
    assert.match(logs[0] ?? "", wantLog, what);
  }
});
