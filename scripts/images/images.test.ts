// The image recipes and the references around them: what scripts/images/build.sh tags is what the
// chart and the operator name by default, and the engine images ship what they need to serve
// --backend native (no compiler at start, no node-llama-cpp).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse } from "yaml";
import { normalizeImageRef } from "../../testing/containers.ts";
import { parseOperatorOptions } from "../../operator/options.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const read = (p: string): string => readFileSync(resolve(ROOT, p), "utf8");

/** The references build.sh tags, from its pins (sourced by bash, as build.sh does). */
function builtRefs(): { operator: string; engine: string; engineGPU: string } {
  const out = execFileSync("bash", ["-c", `ROOT=${ROOT}; . scripts/images/pins.sh; echo "$IMAGE_REGISTRY $IMAGE_VERSION"`], {
    cwd: ROOT,
    encoding: "utf8",
    env: { ...process.env, LLMFLEET_IMAGE_REGISTRY: "" },
  });
  const [registry, version] = out.trim().split(" ");
  return { operator: `${registry}/operator:${version}`, engine: `${registry}/engine:${version}`, engineGPU: `${registry}/engine:${version}-cuda` };
}

test("the chart's default images are the ones images:build tags", () => {
  const values = parse(read("charts/llmfleet/values.yaml")) as { image: { repository: string; tag: string }; engineImage: string; engineGPUImage: string };
  const refs = builtRefs();
  assert.equal(normalizeImageRef(`${values.image.repository}:${values.image.tag}`), refs.operator);
  assert.equal(normalizeImageRef(values.engineImage), refs.engine);
  assert.equal(normalizeImageRef(values.engineGPUImage), refs.engineGPU);
});

test("the operator's default engine images are the ones images:build tags", () => {
  const o = parseOperatorOptions([], {});
  const refs = builtRefs();
  assert.equal(normalizeImageRef(o.engineImage), refs.engine);
  assert.equal(normalizeImageRef(o.engineGPUImage), refs.engineGPU);
});

for (const file of ["images/engine.Dockerfile", "images/engine-cuda.Dockerfile"]) {
  test(`${file} serves --backend native from a built addon and the engine bundle`, () => {
    const text = read(file);
    assert.match(text, /^ENV .*LLMFLEET_NATIVE_ADDON=\/opt\/llmfleet\/llmfleet_native\.node/m);
    assert.match(text, /^COPY --from=addon \/out\/llmfleet_native\.node \/opt\/llmfleet\/llmfleet_native\.node$/m);
    assert.deepEqual(JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(text)?.[1] ?? "[]"), ["node", "/opt/llmfleet/engine.mjs"]);
    // The codec worker sits beside the bundle: engine/kvcodec/codec-offload.ts starts it from there.
    assert.match(text, /^COPY dist\/engine\.mjs dist\/codec-worker\.mjs \/opt\/llmfleet\/$/m);
    assert.match(text, /^USER 65532:65532$/m);
    // Only the last stage is shipped: nothing after its FROM copies a compiler or node_modules.
    const last = text.slice(text.lastIndexOf("\nFROM "));
    assert.doesNotMatch(last, /node_modules|build-essential|\/usr\/local\/cuda\b/);
  });
}

test("the CUDA addon is sm_90 machine code only, at the pinned CUDA 13.0 wheels, built by the recipe a GPU machine can run", () => {
  // The image runs engine/native/build-cuda-image.sh (bench/gpu/http-device.sh setup-image runs the same on the GPU machine).
  assert.match(read("images/engine-cuda.Dockerfile"), /^RUN LIBCUDA_STUB=1 CUDA_ARCH="\$\{CUDA_ARCH\}" bash \/src\/native\/build-cuda-image\.sh /m);
  assert.match(read("engine/native/build-cuda-image.sh"), /-DCMAKE_CUDA_ARCHITECTURES="\$\{ARCH\}-real"/);
  const pins = read("scripts/images/pins.sh");
  assert.match(pins, /^CUDA_ARCH=90$/m);
  for (const w of /^CUDA_WHEELS="(.*)"$/m.exec(pins)?.[1]?.split(" ") ?? []) assert.match(w, /^nvidia-[a-z-]+==13\.0\.[0-9.]+$/, w);
});

test("build.sh bundles the engine and its codec worker, leaving node-llama-cpp out", () => {
  const text = read("scripts/images/build.sh");
  assert.match(text, /^bundle engine\/main\.ts engine\.mjs$/m);
  assert.match(text, /^bundle engine\/kvcodec\/codec-worker\.ts codec-worker\.mjs$/m);
  assert.match(text, /--external:node-llama-cpp/);
});

test("the operator image runs the esbuild bundle, with @pulumi/* its only node_modules: no tsx, no TypeScript", () => {
  const text = read("images/operator.Dockerfile");
  assert.deepEqual(JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(text)?.[1] ?? "[]"), ["node", "/opt/llmfleet/operator.mjs"]);
  assert.match(text, /^COPY dist\/operator\.mjs \/opt\/llmfleet\/operator\.mjs$/m);
  assert.doesNotMatch(text, /tsx|\.ts\b|COPY operator\/(operator|lib|crds)\b/);
  assert.match(text, /^USER 65532:65532$/m);
  const build = read("scripts/images/build.sh");
  assert.match(build, /^bundle operator\/main\.ts operator\.mjs '--external:@pulumi\/\*'$/m);
  // The image's node_modules: @pulumi/pulumi alone, at the lock's version (its dependencies follow).
  assert.match(build, /p\.dependencies = \{ "@pulumi\/pulumi": p\.dependencies\["@pulumi\/pulumi"\] \}/);
});

test("normalizeImageRef resolves references as containerd does", () => {
  assert.equal(normalizeImageRef("llmfleet/engine:0.1.0"), "docker.io/llmfleet/engine:0.1.0");
  assert.equal(normalizeImageRef("busybox"), "docker.io/library/busybox");
  assert.equal(normalizeImageRef("localhost/x/y:1"), "localhost/x/y:1");
  assert.equal(normalizeImageRef("registry.example:5000/llmfleet/engine:0.1.0"), "registry.example:5000/llmfleet/engine:0.1.0");
  assert.equal(normalizeImageRef("ghcr.io/llmfleet/engine:0.1.0-cuda"), "ghcr.io/llmfleet/engine:0.1.0-cuda");
});
