import { test } from "node:test";
import assert from "node:assert/strict";
import { enginePodTemplate, MODEL_CACHE_PATH } from "./engine-pod.ts";

test("engine pods: read-only root file system with a writable /tmp and the model cache as volumes", () => {
  const t = enginePodTemplate({
    labels: {},
    role: "prefill",
    image: "llmfleet/engine:0.1.0",
    args: [],
    gpus: 0,
    cpu: 1,
    memory: "1Gi",
    drain: { delaySeconds: 0, timeoutSeconds: 30 },
  });
  const c = t.spec?.containers[0];
  assert.equal(c?.securityContext?.readOnlyRootFilesystem, true);
  const mounts = new Map((c?.volumeMounts ?? []).map((m) => [m.mountPath, m.name]));
  const volumes = new Map((t.spec?.volumes ?? []).map((v) => [v.name, v]));
  for (const path of ["/tmp", MODEL_CACHE_PATH]) {
    const name = mounts.get(path);
    assert.ok(name, `${path} is mounted`);
    assert.ok(volumes.get(name)?.emptyDir, `${path} is a writable emptyDir`);
  }
});
