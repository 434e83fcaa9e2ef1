// The engine images copy a few source paths (images/engine*.Dockerfile); every module the engine
// can load from engine/main.ts must be among them, or the image fails at start with a missing
// import that no other test would see.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "..");

/** Relative .ts imports (static and dynamic) of a source file, resolved to repo paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(resolve(ROOT, file), "utf8");
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+\.ts)"/g)].map((m) => m[1]!);
  return specs.map((s) => relative(ROOT, resolve(ROOT, dirname(file), s)));
}

function reachable(entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    assert.ok(existsSync(resolve(ROOT, f)), `${f} is imported but does not exist`);
    todo.push(...importsOf(f));
  }
  return seen;
}

for (const dockerfile of ["images/engine.Dockerfile", "images/engine-cuda.Dockerfile"]) {
  test(`${dockerfile} copies every module engine/main.ts can load`, () => {
    const copied = [...readFileSync(resolve(ROOT, dockerfile), "utf8").matchAll(/^COPY (?!--from)(\S+) \.\/\S+$/gm)].map((m) => m[1]!);
    const missing = [...reachable("engine/main.ts")].filter((f) => !copied.some((c) => f === c || f.startsWith(`${c}/`)));
    assert.deepEqual(missing, [], `not in the image: ${missing.join(", ")}`);
    assert.ok(copied.includes("engine"));
  });
}

for (const dockerfile of ["images/engine.Dockerfile", "images/engine-cuda.Dockerfile"]) {
  test(`${dockerfile} ships the native addon or serves with --backend llama (it cannot build the addon at start)`, () => {
    const text = readFileSync(resolve(ROOT, dockerfile), "utf8");
    const shipsAddon = /^ENV .*LLMFLEET_NATIVE_ADDON=/m.test(text);
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(text)?.[1];
    const args = entrypoint ? (JSON.parse(entrypoint) as string[]) : [];
    assert.ok(shipsAddon || args[args.indexOf("--backend") + 1] === "llama", `${dockerfile}: ENTRYPOINT ${entrypoint}`);
  });
}
