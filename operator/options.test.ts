import { test } from "node:test";
import assert from "node:assert/strict";
import { parseOperatorOptions, USAGE } from "./options.ts";

test("engine images: the CPU and the GPU image default to the release's, and each flag sets one", () => {
  const defaults = parseOperatorOptions([], {});
  assert.deepEqual([defaults.engineImage, defaults.engineGPUImage], ["llmfleet/engine:0.1.0", "llmfleet/engine:0.1.0-cuda"]);
  const set = parseOperatorOptions(["--engine-image", "r/engine:2", "--engine-gpu-image=r/engine:2-cuda"], {});
  assert.deepEqual([set.engineImage, set.engineGPUImage], ["r/engine:2", "r/engine:2-cuda"]);
  assert.match(USAGE, /--engine-gpu-image IMAGE .*\n.*\(default llmfleet\/engine:0\.1\.0-cuda\)/);
});

test("--model-load-seconds sets the autoscaler's model-load lead time (default 60) and refuses a negative", () => {
  assert.equal(parseOperatorOptions([], {}).modelLoadSeconds, 60);
  assert.equal(parseOperatorOptions(["--model-load-seconds", "4"], {}).modelLoadSeconds, 4);
  assert.throws(() => parseOperatorOptions(["--model-load-seconds=-1"], {}), /--model-load-seconds must be a non-negative integer/);
  assert.match(USAGE, /--model-load-seconds S/);
});
