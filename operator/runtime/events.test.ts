import { test } from "node:test";
import assert from "node:assert/strict";
import type { Condition } from "../../crds/schema/common.ts";
import { scaleEvent } from "../autoscaler/controller.ts";
import { conditionFlips, setConditions } from "../plan/conditions.ts";
import { LATER, NOW } from "../../testing/builders.ts";
import { flipEvent, microTime } from "./events.ts";

const ready = (status: Condition["status"], reason: string, message: string): Condition => ({
  type: "Ready",
  status,
  reason,
  message,
  lastTransitionTime: NOW,
});

test("a flip is exactly a condition whose lastTransitionTime setConditions moved", () => {
  const before = setConditions(undefined, [{ type: "Ready", status: "False", reason: "RollingOut", message: "0 of 1 replicas updated." }], 1, NOW);
  const cases: Array<[string, Condition[] | undefined, Condition["status"], string, number]> = [
    ["a new condition", undefined, "False", "RollingOut", 1],
    ["the same status, another message", before, "False", "RollingOut", 0],
    ["the same status, another reason", before, "False", "ReferenceNotFound", 0],
    ["a flip", before, "True", "Available", 1],
  ];
  for (const [what, prev, status, reason, flips] of cases) {
    const after = setConditions(prev, [{ type: "Ready", status, reason, message: "m" }], 1, LATER);
    const moved = after[0]?.lastTransitionTime === LATER ? 1 : 0;
    assert.equal(conditionFlips(prev, after).length, flips, what);
    assert.equal(moved, flips, `${what}: lastTransitionTime`);
  }
});

test("a flip's Event names the condition, both statuses, the reason and the message", () => {
  const cases: Array<[Condition["status"] | undefined, Condition, ReturnType<typeof flipEvent>]> = [
    [
      "False",
      ready("True", "Available", "3/3 replicas ready."),
      { type: "Normal", reason: "Available", action: "ConditionChanged", note: "Ready: False → True (Available): 3/3 replicas ready." },
    ],
    [
      "True",
      ready("False", "RollingOut", "2 of 3 replicas updated."),
      { type: "Normal", reason: "RollingOut", action: "ConditionChanged", note: "Ready: True → False (RollingOut): 2 of 3 replicas updated." },
    ],
    [
      undefined,
      ready("False", "ModelNotFound", 'Model "m" not found.'),
      { type: "Warning", reason: "ModelNotFound", action: "ConditionChanged", note: 'Ready is False (ModelNotFound): Model "m" not found.' },
    ],
    [
      "True",
      ready("False", "InvalidSpec", "no node holds 16 GPUs."),
      { type: "Warning", reason: "InvalidSpec", action: "ConditionChanged", note: "Ready: True → False (InvalidSpec): no node holds 16 GPUs." },
    ],
  ];
  for (const [from, to, want] of cases) assert.deepEqual(flipEvent({ from, to }), want);
});

test("an autoscaler scale is worded as the HPA words its own", () => {
  const d = { desired: 4, reason: "scale up: queue needs 4", inputs: {} as never };
  assert.deepEqual(scaleEvent(1, d), {
    type: "Normal",
    reason: "SuccessfulRescale",
    action: "Scale",
    note: "New size: 4 (was 1); reason: scale up: queue needs 4",
  });
});

test("Event times are MicroTime: six fraction digits, as the API server parses them", () => {
  assert.equal(microTime(Date.parse("2026-11-22T10:00:00.123Z")), "2026-11-22T10:00:00.123000Z");
  assert.equal(microTime(Date.parse("2026-11-22T10:00:00Z")), "2026-11-22T10:00:00.000000Z");
});
