/**
 * A model cache filled once and shared read-only (a Model's spec.cache): one fill — a Job the
 * operator plans, or `npm run model:fetch -- --fill` for an image volume — fetches the model into
 * $LLMFLEET_CACHE/models (under the fetch lock, verifying its sha256) and then writes a fill record,
 * $LLMFLEET_CACHE/models/.filled/<key>.json. Engine pods mount the cache read-only and wait for the
 * record of their --model-uri: its presence means the file is complete and verified, so a pod never
 * writes the cache, never takes the lock and never hashes the file again.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { isAbsolute, join, relative, resolve } from "node:path";
import { ensureModel, modelsDir } from "./fetch.ts";
import { sha256File } from "./pypi-chunked-model.ts";

/** What a fill leaves beside the model: which file a URI resolved to, its digest and size. */
export interface FillRecord {
  uri: string;
  /** The model file, relative to $LLMFLEET_CACHE/models when inside it (a volume mounts elsewhere), else absolute. */
  file: string;
  /** "sha256:<hex>" of the file, computed by the fill. */
  checksum: string;
  size: number;
  filledAt: string;
}

/** Where the fill record of `uri` lives: one per URI, so one claim can hold several models. */
export function fillRecordPath(uri: string): string {
  return join(modelsDir(), ".filled", `${createHash("sha256").update(uri).digest("hex").slice(0, 16)}.json`);
}

/**
 * Fetches `uri` into the cache (the fetch's lock makes concurrent fills wait for each other),
 * verifies it against `checksum` when given, and writes the fill record last, atomically.
 */
export async function fillModelCache(uri: string, checksum?: string): Promise<FillRecord> {
  const path = await ensureModel(uri);
  const actual = `sha256:${await sha256File(path)}`;
  if (checksum && actual !== checksum) throw new Error(`model ${uri} fetched to ${path} has ${actual}, the Model's spec.source.checksum says ${checksum}`);
  const inside = relative(modelsDir(), path);
  const record: FillRecord = {
    uri,
    file: inside.startsWith("..") || isAbsolute(inside) ? path : inside,
    checksum: actual,
    size: (await stat(path)).size,
    filledAt: new Date().toISOString(),
  };
  const target = fillRecordPath(uri);
  await mkdir(join(target, ".."), { recursive: true });
  await writeFile(`${target}.tmp`, `${JSON.stringify(record, null, 2)}\n`);
  await rename(`${target}.tmp`, target);
  return record;
}

async function readRecord(uri: string): Promise<FillRecord | undefined> {
  const text = await readFile(fillRecordPath(uri), "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  return JSON.parse(text) as FillRecord;
}

export interface WaitOptions {
  /** Expected "sha256:<hex>": a record with another digest is an error (the cache holds another file). */
  checksum?: string;
  pollMs?: number;
  /** Default: wait as long as it takes (an init container has no deadline; the fill Job has its own). */
  timeoutMs?: number;
  /** Called on the first wait and then every `logEveryMs`. */
  log?: (line: string) => void;
  logEveryMs?: number;
}

/**
 * Waits for the fill record of `uri` and returns the model file's path, without writing anything:
 * the cache is mounted read-only. Refuses a record whose digest is not `checksum` and a file whose
 * size is not the recorded one.
 */
export async function waitForFilledModel(uri: string, opts: WaitOptions = {}): Promise<string> {
  const start = Date.now();
  let lastLog = -Infinity;
  for (;;) {
    const record = await readRecord(uri);
    if (record) return recordedFile(uri, record, opts.checksum);
    if (opts.timeoutMs !== undefined && Date.now() - start > opts.timeoutMs) throw new Error(`no fill of ${uri} in ${modelsDir()} after ${opts.timeoutMs} ms`);
    if (Date.now() - lastLog >= (opts.logEveryMs ?? 30_000)) {
      opts.log?.(`waiting for the model cache to be filled with ${uri} (${fillRecordPath(uri)}), ${Math.round((Date.now() - start) / 1000)} s so far`);
      lastLog = Date.now();
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
  }
}

/** The recorded file's path, once it is the one asked for (`checksum`) and still whole. */
async function recordedFile(uri: string, record: FillRecord, checksum: string | undefined): Promise<string> {
  if (checksum && record.checksum !== checksum) {
    throw new Error(`the model cache's fill of ${uri} has ${record.checksum}, --model-checksum says ${checksum}: the fill Job fills a new record when the Model's source changes`);
  }
  const path = resolve(modelsDir(), record.file);
  const size = (await stat(path).catch(() => undefined))?.size;
  if (size !== record.size) throw new Error(`the model cache's file ${path} has ${size ?? "no"} bytes, its fill record says ${record.size}`);
  return path;
}
