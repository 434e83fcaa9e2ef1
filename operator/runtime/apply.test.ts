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
