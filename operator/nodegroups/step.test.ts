import { test } from "node:test";
import assert from "node:assert/strict";
import type { GPUNodeGroup } from "../api.ts";
import { nodePoolLimitsPatch } from "./karpenter.ts";
import { decide, endRun, runEvent, runState, startRun } from "./runs.ts";
import { nextStep, type StepInput } from "./step.ts";

const group = { metadata: { name: "h100" }, spec: { provider: { kind: "pulumi" }, gpusPerNode: 2, nodes: { min: 1, max: 4 } } } as unknown as GPUNodeGroup;
const T0 = Date.parse("2026-01-01T00:00:00Z");
const at = (s: number): string => new Date(T0 + s * 1000).toISOString();
const input = (over: Partial<StepInput>): StepInput => ({
  group,
  actions: { desired: 3, create: ["h100-1", "h100-2"], remove: [] },
  members: ["h100-0"],
  size: { demand: 5, need: 3, headroom: 0, desired: 3 },
  resumable: false,
  surplusForSeconds: 0,
  scaleDownDelaySeconds: 600,
  provisioningSeconds: 180,
  retrySeconds: 60,
  nowMs: T0 + 100_000,
  ...over,
});
const ONE = { demand: 1, need: 1, headroom: 0, desired: 1 };
const started = startRun(undefined, { provider: "pulumi", targetNodes: 3, operator: "op-a", now: at(0) });

test("runs: Progressing → Complete / Failed / Aborted; ConcurrentUpdate is neither", () => {
  assert.equal(started.id, 1);
  assert.equal(runState(started), "Progressing");
  assert.equal(runState(endRun(started, "Complete", "ok", at(5))), "Complete");
  assert.equal(runState(endRun(started, "Failed", "boom", at(5))), "Failed");
  assert.equal(runState(endRun(started, "ConcurrentUpdate", "held", at(5))), "ConcurrentUpdate");
  const aborted = endRun(started, "Aborted", "restart", at(5));
  assert.equal(runState(aborted), "Aborted");
  assert.deepEqual(
    aborted.conditions.map((c) => [c.type, c.status]),
    [
      ["Progressing", "False"],
      ["Complete", "False"],
      ["Failed", "True"],
      ["Aborted", "True"],
    ],
  );
  assert.equal(aborted.finishedAt, at(5));
  assert.equal(startRun(aborted, { provider: "pulumi", targetNodes: 1, operator: "op-b", now: at(9) }).id, 2);
});

test("runEvent: a run's start and end are Events, a Warning when it failed; no change, no Event", () => {
  assert.deepEqual(runEvent(undefined, started), { type: "Normal", reason: "NodeGroupRunStarted", action: "Scale", note: "pulumi: bringing the group to 3 nodes." });
  assert.equal(runEvent(started, started), undefined);
  assert.equal(runEvent(started, endRun(started, "Complete", "ok", at(5)))?.reason, "NodeGroupRunComplete");
  const failed = runEvent(started, endRun(started, "Failed", "boom", at(5)));
  assert.deepEqual([failed?.type, failed?.reason, failed?.note], ["Warning", "NodeGroupRunFailed", "Run 1: boom"]);
  assert.equal(runEvent(started, endRun(started, "Aborted", "restart", at(5)))?.type, "Warning");
  const done = endRun(started, "Complete", "ok", at(5));
  assert.equal(runEvent(done, done), undefined);
  assert.equal(runEvent(done, undefined), undefined);
});

test("decide: decidedAt moves only when the decision changes", () => {
  const a = decide(undefined, { desiredNodes: 3, currentNodes: 1, decision: "scale up" }, at(0));
  assert.equal(decide(a, { desiredNodes: 3, currentNodes: 2, decision: "scale up" }, at(9)).decidedAt, at(0));
  assert.equal(decide(a, { desiredNodes: 3, currentNodes: 3, decision: "steady" }, at(9)).decidedAt, at(9));
});

test("nextStep: scale up names the nodes after the change and explains the figure", () => {
  const step = nextStep(input({}));
  assert.equal(step.kind, "run");
  assert.equal(step.decision, "scale up 1 → 3 nodes: GPU demand 5 / 2 per node = 3 + headroom 0, within [1, 4] = 3");
  assert.deepEqual(step.kind === "run" && step.nodes, ["h100-0", "h100-1", "h100-2"]);
});

test("nextStep: scale down only after the delay, leaving out the removed nodes", () => {
  const members = ["h100-0", "h100-1", "h100-2"];
  const waiting = nextStep(input({ members, actions: { desired: 1, create: [], remove: [] }, size: ONE, surplusForSeconds: 100 }));
  assert.equal(waiting.kind, "wait");
  const removalAt = at(600).replace(".000Z", "Z");
  assert.ok(waiting.decision.startsWith(`surplus of 2 nodes, removed at ${removalAt} unless demand returns`), waiting.decision);
  // A deadline, not a countdown: the next pass states the same decision (no status write).
  const later = nextStep(input({ members, actions: { desired: 1, create: [], remove: [] }, size: ONE, surplusForSeconds: 115, nowMs: T0 + 115_000 }));
  assert.equal(later.decision, waiting.decision);
  const down = nextStep(input({ members, actions: { desired: 1, create: [], remove: ["h100-2", "h100-1"] }, size: ONE, surplusForSeconds: 600 }));
  assert.deepEqual(down.kind === "run" && down.nodes, ["h100-0"]);
  assert.match(down.decision, /^scale down 3 → 1 nodes after the 600s delay/);
});

test("nextStep: an aborted pulumi run halts the group until its id is acknowledged; resumable providers go on", () => {
  const lastRun = endRun(started, "Aborted", "restart", at(5));
  const halted = nextStep(input({ lastRun }));
  assert.equal(halted.kind, "halt");
  assert.match(halted.decision, /run 1 was aborted .* annotate serving\.llmfleet\.dev\/acknowledge-run=1/);
  assert.equal(nextStep(input({ lastRun, acknowledgedRun: 1 })).kind, "run");
  assert.equal(nextStep(input({ lastRun, resumable: true })).kind, "run");
});

test("nextStep: a failed run is retried after retrySeconds; a complete one waits for provisioning", () => {
  const failed = endRun(started, "Failed", "boom", at(90));
  assert.ok(nextStep(input({ lastRun: failed })).decision.startsWith(`retrying at ${at(150).replace(".000Z", "Z")}: run 1 failed`));
  assert.equal(nextStep(input({ lastRun: failed, nowMs: T0 + 120_000 })).decision, nextStep(input({ lastRun: failed })).decision, "the same decision on a later pass");
  assert.equal(nextStep(input({ lastRun: failed, nowMs: T0 + 151_000 })).kind, "run");
  const complete = endRun(started, "Complete", "ok", at(90));
  assert.match(nextStep(input({ lastRun: complete })).decision, /^provisioning: run 1 asked for 3 nodes, 1 present/);
  assert.equal(nextStep(input({ lastRun: complete, nowMs: T0 + 271_000 })).kind, "run", "provisioning time over: asked again");
});

test("karpenter: the NodePool's nvidia.com/gpu limit is the desired nodes' GPUs", () => {
  assert.deepEqual(nodePoolLimitsPatch(group, 3), { spec: { limits: { "nvidia.com/gpu": "6" } } });
  assert.deepEqual(nodePoolLimitsPatch(group, 0), { spec: { limits: { "nvidia.com/gpu": "0" } } });
});
