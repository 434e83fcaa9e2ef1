/**
 * Builds bench:kv-importance's attention probe (attention.cpp) against the static llama.cpp
 * libraries of the engine's CPU native build (scripts/native/build.sh makes them, or finds them
 * cached), once per source hash, into the native cache. Returns the executable's path.
 */
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

const root = new URL("../../", import.meta.url).pathname;

export function buildAttentionProbe(): string {
  process.stderr.write("kv-importance: native CPU build (scripts/native/build.sh)\n");
  execFileSync("bash", [join(root, "scripts/native/build.sh")], { stdio: ["ignore", "ignore", "inherit"] });
  const cache = join(process.env.LLMFLEET_CACHE ?? join(homedir(), ".cache/llmfleet"), "native");
  const tag = (JSON.parse(readFileSync(join(root, "node_modules/node-llama-cpp/llama/llama.cpp.info.json"), "utf8")) as { tag: string }).tag;
  const src = join(cache, `llama.cpp-${tag}`);
  const lib = join(cache, "build-cpu-tools0/llama.cpp");
  const cpp = join(root, "bench/kv-importance/attention.cpp");
  const out = join(cache, `attention-probe-${createHash("sha256").update(readFileSync(cpp)).update(tag).digest("hex").slice(0, 16)}`);
  if (existsSync(out)) return out;
  const libs = ["src/libllama.a", "ggml/src/libggml.a", "ggml/src/libggml-cpu.a", "ggml/src/libggml-base.a"].map((l) => join(lib, l));
  const missing = libs.filter((l) => !existsSync(l));
  if (missing.length > 0) throw new Error(`kv-importance: the native build left no ${missing.join(", ")}`);
  process.stderr.write(`kv-importance: compiling the attention probe into ${out}\n`);
  execFileSync(
    "g++",
    ["-O2", "-std=c++17", cpp, `-I${join(src, "include")}`, `-I${join(src, "ggml/include")}`, ...libs, "-fopenmp", "-lpthread", "-ldl", "-o", out],
    {
      stdio: ["ignore", "inherit", "inherit"],
    },
  );
  return out;
}
