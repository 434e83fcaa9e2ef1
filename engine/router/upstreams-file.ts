/**
 * --upstreams-file: the router's pods read from a JSON file, re-read whenever it changes, so pods
 * can be added and drained while the router serves (`npm start` autoscaling writes it). The file:
 *   {"generation": 3, "prefill": ["http://127.0.0.1:18081"], "decode": [...], "aggregated": [...]}
 * A writer replaces it atomically (write then rename). A file that cannot be read or parsed is
 * ignored (the lists in use stay), and reported on stderr.
 */
import { readFileSync } from "node:fs";
import { RouterUpstreams, type RoutingPolicy, type UpstreamLists } from "./upstreams.ts";

export interface UpstreamsFile extends UpstreamLists {
  generation: number;
}

const urls = (v: unknown, key: string): string[] => {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((u) => typeof u === "string")) throw new Error(`${key} must be a list of URLs`);
  return v.map((u: string) => u.replace(/\/+$/, ""));
};

export function parseUpstreamsFile(text: string): UpstreamsFile {
  const raw = JSON.parse(text) as Record<string, unknown>;
  if (!Number.isInteger(raw.generation)) throw new Error("generation must be an integer");
  return {
    generation: raw.generation as number,
    prefill: urls(raw.prefill, "prefill"),
    decode: urls(raw.decode, "decode"),
    aggregated: urls(raw.aggregated, "aggregated"),
  };
}

export interface WatchedUpstreams extends Disposable {
  upstreams: RouterUpstreams;
}

/** Upstreams that follow `path` (polled every `intervalMs`, default 200); `initial` serves until the file is first read. */
export function watchUpstreamsFile(path: string, initial: UpstreamLists, policy?: RoutingPolicy, intervalMs = 200): WatchedUpstreams {
  const upstreams = new RouterUpstreams(initial, policy);
  // Polled by content, not by fs.watchFile: its first stat is taken asynchronously, so a rewrite in
  // the first moments after start became its baseline and was never applied (seen in CI). A file is
  // parsed, or its error reported, once per distinct content.
  let last: string | undefined;
  const load = (): void => {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      if (last !== "") process.stderr.write(`router: ${path}: ${(err as Error).message}; keeping generation ${upstreams.generation}\n`);
      last = "";
      return;
    }
    if (text === last) return;
    last = text;
    try {
      const file = parseUpstreamsFile(text);
      if (file.generation !== upstreams.generation) upstreams.replace(file, file.generation);
    } catch (err) {
      process.stderr.write(`router: ${path}: ${(err as Error).message}; keeping generation ${upstreams.generation}\n`);
    }
  };
  load();
  const timer = setInterval(load, intervalMs);
  timer.unref();
  return { upstreams, [Symbol.dispose]: () => clearInterval(timer) };
}
