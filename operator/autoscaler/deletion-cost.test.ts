import { test } from "node:test";
import assert from "node:assert/strict";
import { deletionCost } from "./deletion-cost.ts";
import { emptyScrape } from "./scrape.ts";

test("deletionCost: a pod's requests in flight (running + waiting); a pod that did not answer costs nothing", () => {
  assert.equal(deletionCost(undefined), 0);
  assert.equal(deletionCost(emptyScrape()), 0, "no pod answered");
  assert.equal(deletionCost({ ...emptyScrape(), pods: 1 }), 0, "idle");
  assert.equal(deletionCost({ ...emptyScrape(), pods: 1, running: 3, queueDepth: 2 }), 5);
});
