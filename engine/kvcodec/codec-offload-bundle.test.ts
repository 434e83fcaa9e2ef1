// codec-offload.ts as the GPU machine and the engine image run it: inside an esbuild bundle (an
// .mjs), which starts its worker from codec-worker.mjs beside the bundle. Without that file the
// worker fails to start about 30 ms in, while a large input is still being copied for it a slice
// at a time (the event loop serving other work between slices): that failure once rejected the
// job's promise before anything awaited it, and Node ended the engine on the unhandled rejection
// (MODULE_NOT_FOUND for .device/codec-worker.mjs). Without the worker, or with one that dies
// holding the jobs, they run inline; with it they run on it; the same bytes every way, and the
// same as unbundled inline.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { kvCodec } from "./codec.ts";
import { syntheticSeqState } from "../../testing/kv-state.ts";

const HERE = fileURLToPath(new URL(".", import.meta.url));
const CODEC = "compact";
// 32 MiB: over codec-offload.ts's 16 MiB copy slice, so the copy for the worker takes turns of the loop.
const STATE = { tokens: 512, channels: 1024, sections: [16], seed: 5 };

// The child: two concurrent encodes (both copying when the worker fails) while other work holds
// the event loop 40 ms a turn, as a pod's requests do. Prints each output's SHA-256 and how many
// turns that other work got while the encodes ran (many only when they ran on the worker).
const ENTRY = `
import { createHash } from "node:crypto";
import { runCodec } from "./codec-offload.ts";
import { syntheticSeqState } from "../../testing/kv-state.ts";
const state = syntheticSeqState(${JSON.stringify(STATE)});
let turns = 0;
let stop = false;
const busy = () => {
  turns++;
  const end = performance.now() + 40;
  while (performance.now() < end);
  if (!stop) setImmediate(busy);
};
setImmediate(busy);
const outs = await Promise.all([runCodec("encode", ${JSON.stringify(CODEC)}, state, 0), runCodec("encode", ${JSON.stringify(CODEC)}, state, 0)]);
stop = true;
console.log(JSON.stringify({ sha: outs.map((o) => createHash("sha256").update(o).digest("hex")), turns }));
`;

// As scripts/native/device-pack.sh and scripts/images/build.sh run esbuild.
async function bundle(entry: { file: string } | { contents: string }, outfile: string): Promise<void> {
  await build({
    ...("file" in entry ? { entryPoints: [entry.file] } : { stdin: { contents: entry.contents, resolveDir: HERE, sourcefile: "entry.ts", loader: "ts" } }),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    logLevel: "warning",
    outfile,
    external: ["node-llama-cpp"],
    banner: { js: "import { createRequire as __llmfleetRequire } from 'node:module'; const require = __llmfleetRequire(import.meta.url);" },
  });
}

function runBundle(dir: string): { sha: string[]; turns: number } {
  const r = spawnSync(process.execPath, [join(dir, "entry.mjs")], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, `the bundle exited with ${r.status} (signal ${r.signal}):\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
}

/** `fill` given a temporary folder holding the entry's bundle, removed after. */
async function withBundle(fill: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "llmfleet-codec-bundle-"));
  try {
    await bundle({ contents: ENTRY }, join(dir, "entry.mjs"));
    await fill(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

let expected: string;
before(() => {
  expected = createHash("sha256").update(kvCodec(CODEC).encode(syntheticSeqState(STATE))).digest("hex");
});

test("a bundle without codec-worker.mjs beside it runs its encodes inline: no crash, the same bytes", async () => {
  await withBundle((dir) => {
    const { sha } = runBundle(dir);
    assert.deepEqual(sha, [expected, expected]);
  });
});

test("a bundle with codec-worker.mjs beside it encodes on the worker: the same bytes", async () => {
  await withBundle(async (dir) => {
    await bundle({ file: join(HERE, "codec-worker.ts") }, join(dir, "codec-worker.mjs"));
    const { sha, turns } = runBundle(dir);
    assert.deepEqual(sha, [expected, expected]);
    // Inline, the encodes hold the loop: the other work gets only the copy's few turns.
    assert.ok(turns >= 8, `the other work got ${turns} turns of the event loop while the encodes ran: not on the worker`);
  });
});

test("a bundle whose codec worker dies holding the jobs runs them inline: no crash, the same bytes", async () => {
  await withBundle((dir) => {
    writeFileSync(join(dir, "codec-worker.mjs"), `import { parentPort } from "node:worker_threads";\nparentPort.on("message", () => { throw new Error("codec worker died"); });\n`);
    const { sha } = runBundle(dir);
    assert.deepEqual(sha, [expected, expected]);
  });
});

test("the GPU machine's pack (device-pack.sh) bundles the codec worker beside engine.mjs, as the image does", () => {
  const pack = readFileSync(new URL("../../scripts/native/device-pack.sh", import.meta.url), "utf8");
  const list = /^for entry in (.*); do$/m.exec(pack)?.[1]?.split(" ") ?? [];
  assert.ok(list.includes("engine/main.ts:engine.mjs"), list.join(" "));
  assert.ok(list.includes("engine/kvcodec/codec-worker.ts:codec-worker.mjs"), list.join(" "));
});
