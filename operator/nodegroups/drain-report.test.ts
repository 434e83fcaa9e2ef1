import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Node, V1Pod } from "@kubernetes/client-node";
import { aNodeGroup, NOW } from "../../testing/builders.ts";
import {
  actuatorConditions,
  backoffMs,
  blockedByBudget,
  changeAfterDrains,
  CORDONED_BY_ANNOTATION,
  drainCondition,
  drained,
  drainPolicy,
  isEvictable,
  nodesToUncordon,
  runResult,
  type DrainResult,
} from "./drain-report.ts";

const POLICY = { timeoutSeconds: 600, force: false };
const blocked = blockedByBudget("g-1", [{ pod: "ns/p", why: "The disruption budget p needs 1 healthy pods and has 1 currently" }], POLICY);

test("drainPolicy: spec.drain, defaulting to a 10m timeout and no force", () => {
  const group = aNodeGroup();
  assert.deepEqual(drainPolicy(group), { timeoutSeconds: 600, force: false });
  group.spec.drain = { timeout: "30s", force: true };
  assert.deepEqual(drainPolicy(group), { timeoutSeconds: 30, force: true });
});

test("isEvictable: every pod but DaemonSet and mirror pods", () => {
  const pod = (meta: V1Pod["metadata"]): V1Pod => ({ metadata: { name: "p", ...meta } });
  const cases: Array<[string, V1Pod, boolean]> = [
    ["plain", pod({}), true],
    ["ReplicaSet", pod({ ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "r", uid: "u", controller: true }] }), true],
    ["DaemonSet", pod({ ownerReferences: [{ apiVersion: "apps/v1", kind: "DaemonSet", name: "d", uid: "u", controller: true }] }), false],
    ["mirror", pod({ annotations: { "kubernetes.io/config.mirror": "abc" } }), false],
  ];
  for (const [name, p, want] of cases) assert.equal(isEvictable(p), want, name);
});

test("backoffMs: 1 s doubling up to 30 s", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 9].map(backoffMs), [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
});

test("a blocked drain names the node, the pod and the budget's words, and how to override", () => {
  assert.equal(blocked.drained, false);
  assert.match(blocked.message, /^g-1 stays cordoned: eviction refused for 600s by a PodDisruptionBudget: ns\/p \(The disruption budget p needs 1/);
  assert.match(blocked.message, /spec\.drain\.force/);
  const many = blockedByBudget(
    "g-1",
    Array.from({ length: 7 }, (_, i) => ({ pod: `ns/p${i}`, why: "no" })),
    POLICY,
  );
  assert.match(many.message, /ns\/p4 \(no\) and 2 more;/);
});

test("drainCondition: True with the first blocked reason, False once every node drained, nothing without drains", () => {
  const ok = drained("g-2", 1, 0);
  const cases: Array<[string, DrainResult[], { status: string; reason: string } | undefined]> = [
    ["no drains", [], undefined],
    ["all drained", [ok], { status: "False", reason: "Drained" }],
    ["one blocked", [ok, blocked], { status: "True", reason: "DisruptionBudget" }],
  ];
  for (const [name, results, want] of cases) {
    const c = drainCondition(results);
    assert.deepEqual(c && { status: c.status, reason: c.reason }, want, name);
  }
});

test("runResult: a blocked drain fails the run (retried later) and says why", () => {
  assert.deepEqual(runResult([drained("g-2", 1, 0)], "deleted 1 kwok nodes").outcome, "Complete");
  const r = runResult([drained("g-2", 1, 0), blocked], "deleted 1 kwok nodes");
  assert.equal(r.outcome, "Failed");
  assert.match(r.message, /^deleted 1 kwok nodes; drain blocked: g-1 stays cordoned/);
  assert.equal(r.drain?.status, "True");
});

test("changeAfterDrains: a node whose drain was blocked stays in the group and the target", () => {
  const group = aNodeGroup();
  const planned = { group, target: 1, nodes: ["g-0"], create: [], remove: ["g-2", "g-1"] };
  assert.deepEqual(changeAfterDrains(planned, [drained("g-2", 0, 0), blocked]), { group, target: 2, nodes: ["g-0", "g-1"], create: [], remove: ["g-2"] });
  assert.deepEqual(changeAfterDrains(planned, [drained("g-2", 0, 0), drained("g-1", 0, 0)]), planned);
});

test("nodesToUncordon: only nodes this actuator cordoned, not being removed or deleted", () => {
  const node = (name: string, opts: { cordoned?: boolean; by?: string; deleting?: boolean } = {}): V1Node => ({
    metadata: {
      name,
      annotations: opts.by ? { [CORDONED_BY_ANNOTATION]: opts.by } : {},
      ...(opts.deleting ? { deletionTimestamp: new Date(NOW) } : {}),
    },
    spec: { unschedulable: opts.cordoned ?? false },
  });
  const me = "llmfleet/nodegroups";
  const members = [
    node("ours", { cordoned: true, by: me }),
    node("person", { cordoned: true }),
    node("schedulable", { by: me }),
    node("removing", { cordoned: true, by: me }),
    node("deleting", { cordoned: true, by: me, deleting: true }),
  ];
  assert.deepEqual(nodesToUncordon(members, ["removing"], me), ["ours"]);
});

test("actuatorConditions: the stored DrainBlocked kept (server-side apply would drop it), updated when given", () => {
  const stored = [
    { type: "Ready", status: "True" as const, reason: "NodesReady", message: "", lastTransitionTime: NOW },
    { type: "DrainBlocked", status: "True" as const, reason: "DisruptionBudget", message: "x", lastTransitionTime: NOW },
  ];
  assert.deepEqual(actuatorConditions(stored, undefined, 1, "later"), [stored[1]]);
  assert.deepEqual(actuatorConditions([stored[0]!], undefined, 1, "later"), []);
  const next = actuatorConditions(stored, { type: "DrainBlocked", status: "False", reason: "Drained", message: "y" }, 2, "later");
  assert.deepEqual(next, [{ type: "DrainBlocked", status: "False", reason: "Drained", message: "y", lastTransitionTime: "later", observedGeneration: 2 }]);
});
