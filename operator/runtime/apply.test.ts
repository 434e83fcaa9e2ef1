import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { AppliedChildren, canonical, ownStatusView } from "./apply.ts";

const MANAGER = "llmfleet/gpunodegroup";

test("a status compare sees only the fields this manager owns or writes, not another manager's", () => {
  const obj = {
    metadata: {
      name: "g",
      managedFields: [
        { manager: MANAGER, operation: "Apply", subresource: "status", fieldsV1: { "f:status": { "f:readyNodes": {}, "f:conditions": {} } } },
        { manager: "llmfleet/nodegroup-actuator", operation: "Apply", subresource: "status", fieldsV1: { "f:status": { "f:actuation": {} } } },
      ],
    },
    status: { readyNodes: 2, conditions: [{ type: "Ready" }], actuation: { desiredNodes: 3 } },
  };
  assert.deepEqual(ownStatusView(obj, MANAGER, { readyNodes: 2, conditions: [{ type: "Ready" }] }), { readyNodes: 2, conditions: [{ type: "Ready" }] });
  // A field it owned and now leaves out still counts (the apply would remove it).
  assert.deepEqual(ownStatusView(obj, MANAGER, { readyNodes: 2 }), { readyNodes: 2, conditions: [{ type: "Ready" }] });
  // A new field is compared even before it is owned.
  assert.deepEqual(ownStatusView(obj, MANAGER, { readyNodes: 2, conditions: [], nodes: 1 }), { readyNodes: 2, conditions: [{ type: "Ready" }] });
});

test("without managedFields the whole stored status is compared", () => {
  const obj = { metadata: { name: "g" }, status: { readyNodes: 2, actuation: { desiredNodes: 3 } } };
  assert.deepEqual(ownStatusView(obj, MANAGER, { readyNodes: 2 }), { readyNodes: 2, actuation: { desiredNodes: 3 } });
});

test("conditions are a list map: another manager's entries are not in the view", () => {
  const owns = (type: string): Record<string, unknown> => ({ [`k:{"type":"${type}"}`]: { "f:status": {} } });
  const obj = {
    metadata: {
      name: "g",
      managedFields: [
        { manager: MANAGER, operation: "Apply", subresource: "status", fieldsV1: { "f:status": { "f:conditions": owns("Ready") } } },
        { manager: "llmfleet/nodegroups", operation: "Apply", subresource: "status", fieldsV1: { "f:status": { "f:conditions": owns("DrainBlocked") } } },
      ],
    },
    status: { conditions: [{ type: "Ready" }, { type: "DrainBlocked" }] },
  };
  assert.deepEqual(ownStatusView(obj, MANAGER, { conditions: [{ type: "Ready" }] }), { conditions: [{ type: "Ready" }] });
  assert.deepEqual(ownStatusView(obj, "llmfleet/nodegroups", { conditions: [{ type: "DrainBlocked" }] }), { conditions: [{ type: "DrainBlocked" }] });
  // A type it is about to write counts before it owns it.
  assert.deepEqual(ownStatusView(obj, MANAGER, { conditions: [{ type: "DrainBlocked" }] }), { conditions: [{ type: "Ready" }, { type: "DrainBlocked" }] });
});

describe("AppliedChildren", () => {
  const desired = { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "d", namespace: "ns", labels: { a: "1" } }, spec: { replicas: 2 } };
  const answer = { ...desired, metadata: { ...desired.metadata, uid: "u1", generation: 3, resourceVersion: "10" } };

  test("a child is up to date only after this process applied the same desired state and nobody changed its spec since", () => {
    const applied = new AppliedChildren();
    assert.equal(applied.upToDate(desired, answer), false, "never applied by this process");
    applied.record(desired, answer);
    assert.equal(applied.upToDate(desired, answer), true);
    // A status change moves resourceVersion, not generation: still up to date.
    const statusChanged = { ...answer, metadata: { ...answer.metadata, resourceVersion: "11" }, status: { readyReplicas: 1 } };
    assert.equal(applied.upToDate(desired, statusChanged), true);
    const scaled = { ...desired, spec: { replicas: 3 } };
    assert.equal(applied.upToDate(scaled, answer), false, "a new desired state");
    assert.equal(applied.upToDate(desired, { ...answer, metadata: { ...answer.metadata, generation: 4 } }), false, "someone changed its spec");
    assert.equal(applied.upToDate(desired, { ...answer, metadata: { ...answer.metadata, uid: "u2" } }), false, "deleted and created again");
    assert.equal(applied.upToDate(desired, { ...answer, metadata: { ...answer.metadata, labels: {} } }), false, "our label was removed");
    assert.equal(applied.upToDate(desired, undefined), false, "not in the cache");
  });

  test("without a generation (Services, ServiceAccounts) any change of resourceVersion counts", () => {
    const applied = new AppliedChildren();
    const svc = { apiVersion: "v1", kind: "Service", metadata: { name: "s", namespace: "ns" }, spec: { ports: [{ port: 80 }] } };
    const stored = { ...svc, metadata: { ...svc.metadata, uid: "u", resourceVersion: "5" } };
    applied.record(svc, stored);
    assert.equal(applied.upToDate(svc, stored), true);
    assert.equal(applied.upToDate(svc, { ...stored, metadata: { ...stored.metadata, resourceVersion: "6" } }), false);
    applied.forget(svc);
    assert.equal(applied.upToDate(svc, stored), false, "forgotten once pruned");
  });

  test("the desired state is compared whatever its key order", () => {
    const applied = new AppliedChildren();
    applied.record(desired, answer);
    const reordered = { spec: { replicas: 2 }, metadata: { labels: { a: "1" }, namespace: "ns", name: "d" }, kind: "Deployment", apiVersion: "apps/v1" };
    assert.equal(applied.upToDate(reordered, answer), true);
  });
});

test("canonical ignores key order at every depth, and undefined fields", () => {
  assert.equal(canonical({ a: { x: 1, y: [{ q: 1, p: 2 }] }, b: undefined }), canonical({ a: { y: [{ p: 2, q: 1 }], x: 1 } }));
  assert.notEqual(canonical({ a: [1, 2] }), canonical({ a: [2, 1] }));
});
