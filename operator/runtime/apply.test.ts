import { test } from "node:test";
import assert from "node:assert/strict";
import { ownStatusView } from "./apply.ts";

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
