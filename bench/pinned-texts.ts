/**
 * Texts of this repository read as they were at a commit (git show), so a benchmark's runs compare
 * on the same texts whatever the working tree holds (bench/kv-quality.ts, bench/rag-join.ts); or,
 * where there is no git history (the GPU machine gets the working tree's files alone), as the
 * working tree holds them.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const root = new URL("../", import.meta.url);

/** `source` as it was at `commit` (git show): benchmarks that pin their texts (`who` names them in the error). */
export function textAtCommit(commit: string, source: string, who: string): string {
  try {
    return execFileSync("git", ["show", `${commit}:${source}`], { cwd: new URL(".", root), encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    throw new Error(
      `${who} read ${source} as of commit ${commit.slice(0, 12)} (so runs compare) and git could not: ${(err as Error).message.split("\n")[0]} — run it in a full clone`,
      { cause: err },
    );
  }
}

/** `source` as the working tree holds it (relative to the repository root): where there is no history to `git show`. */
export function textInWorktree(source: string): string {
  return readFileSync(new URL(source, root), "utf8");
}
