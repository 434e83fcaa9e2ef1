/**
 * The local path of a P/D hand-off (issue 18's device path): where the decode pod runs on the same
 * machine (the same kernel: nodeIdentity) and lends a region of its memory, the prefill pod exports
 * the state's rows straight into it — device to device through CUDA IPC on a GPU, through POSIX
 * shared memory on a CPU — and sends the headers alone (a few bytes a token) with the stage call.
 * Anything that stops it (no region to lend, a region this process cannot map: another GPU, no
 * shared /dev/shm) falls back to the network path, and the decode pod is not tried locally again
 * for a while. LLMFLEET_KV_LOCAL=0 turns it off; --kv-transport tcp or http never takes it.
 *
 *   decode: POST /internal/kv-local/reserve {bytes} -> {region, bytes}: a region lent for one hand-off
 *           POST /internal/kv-local/:id {model, tokens, cachedTokens, region, size, meta, rows} -> 204:
 *           the state staged (the generate call imports it from the region, then the region is free)
 */
import type { Request, Response, Router } from "express";
import { HttpError } from "../http/http-error.ts";
import { identityHeaders } from "../access/identity.ts";
import type { SharedRegions } from "../native/binding.ts";
import type { LocalState, RuntimeSequence } from "../runtime/runtime.ts";
import type { PreparedRequest } from "../serving/completion-service.ts";
import type { HandoffStore } from "./handoff-store.ts";
import { localUrl, stageOr429, type HandoffDeps, type PrefillResponse } from "./handoff-routes.ts";
import { failedBehind } from "./staged-wait.ts";
import { httpUrl } from "../http/http-url.ts";
import { kvStreamAddon, type KvTransportInfo } from "./kv-transport.ts";
import { LOCAL_LEND_DEFAULT, LocalRegions, nodeIdentity, PROBE_BYTES, RegionMappings } from "./local-regions.ts";
import { handoffHeader, probe } from "./tcp-handoff.ts";

/** What a decode pod says of its local path in /internal/kv-transport. */
export interface LocalInfo {
  /** nodeIdentity() of the decode pod. */
  node: string;
  /** Its regions are device memory (CUDA IPC). */
  device: boolean;
  /** Its probe region (LocalRegions.probe): a prefill pod that cannot map it never asks for a region. */
  probe: string;
}


/** Why the local path was not taken for a hand-off: the caller sends it over the network instead. */
export class LocalUnavailable extends Error {}

const addonRegions = async (): Promise<SharedRegions | undefined> => {
  const a = (await kvStreamAddon()) as Partial<SharedRegions> | undefined;
  return a?.kvRegionCreate && a.kvRegionOpen && a.kvRegionClose && a.kvRegionCuda ? (a as SharedRegions) : undefined;
};

/** Decode side: the regions this pod lends, or undefined where it cannot (no addon with regions, a runtime that cannot import from them, a cap of 0). */
export async function localRegions(sequences: readonly RuntimeSequence[], gpu: boolean): Promise<LocalRegions | undefined> {
  const cap = Number(process.env.LLMFLEET_KV_LOCAL_BYTES ?? LOCAL_LEND_DEFAULT);
  if (process.env.LLMFLEET_KV_LOCAL === "0" || !(cap > 0) || !sequences.every((s) => s.importStateFrom)) return undefined;
  const addon = await addonRegions();
  if (!addon) return undefined;
  try {
    return new LocalRegions(addon, cap, gpu && addon.kvRegionCuda());
  } catch (err) {
    console.error(`llmfleet: this decode pod lends no memory for local hand-offs (${(err as Error).message}); they come over the network`);
    return undefined;
  }
}

/** Decode side: the two routes, and what /internal/kv-transport says of them. */
export function localRoutes(router: Router, deps: HandoffDeps, regions: LocalRegions, store: HandoffStore): LocalInfo {
  router.post("/internal/kv-local/reserve", (req: Request, res: Response) => {
    const bytes = (req.body as { bytes?: unknown } | undefined)?.bytes;
    if (typeof bytes !== "number" || !Number.isInteger(bytes) || bytes <= 0) throw new HttpError(400, "bytes must be a positive integer", { param: "bytes" });
    let r;
    try {
      r = regions.reserve(bytes);
    } catch (err) {
      throw new HttpError(507, `decode pod cannot make a region of ${bytes} bytes: ${(err as Error).message}`, { code: "handoff_store_full" });
    }
    if (!r) throw new HttpError(429, `decode pod lends at most ${regions.capBytes} bytes of hand-off memory; retry later`, { code: "handoff_store_full", headers: { "Retry-After": "1" } });
    // This pod's own URL: behind a Service the stage call and the generate call must reach it.
    res.json({ region: r.name, bytes: r.bytes, decodeUrl: deps.advertiseUrl ?? localUrl(req) });
  });
  router.post("/internal/kv-local/:id", (req: Request, res: Response) => {
    const t0 = performance.now();
    const m = parseStage(req.body);
    const { modelId } = deps.service.runtime.info;
    if (m.model !== modelId) throw new HttpError(409, `KV state is for model ${String(m.model)}; this pod serves ${modelId}`, { code: "model_mismatch" });
    const region = regions.hold(m.region);
    if (!region) throw new HttpError(404, `region ${m.region} is not one this pod lent (expired, or never reserved)`, { code: "handoff_not_found" });
    if (m.size > region.bytes) throw new HttpError(400, `a state of ${m.size} bytes does not fit region ${m.region} (${region.bytes})`, { code: "bad_kv_stream" });
    const state: LocalState = { tokens: m.tokens, size: m.size, meta: m.meta, rows: m.rows };
    const done = (): void => regions.release(m.region);
    try {
      stageOr429(store, { id: String(req.params.id), tokens: m.tokens, held: { local: { region: region.handle, state, done } }, cachedTokens: m.cachedTokens });
    } catch (err) {
      done();
      throw err;
    }
    deps.metrics.handoffBytes.observe(m.size);
    deps.metrics.handoffSeconds.observe({ stage: "receive" }, (performance.now() - t0) / 1000);
    res.status(204).end();
  });
  return { node: nodeIdentity(), device: regions.device, probe: regions.probe.name };
}

interface Stage {
  model: unknown;
  tokens: number[];
  cachedTokens: number;
  region: string;
  size: number;
  meta: Buffer;
  rows: Float64Array;
}

const ints = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => Number.isInteger(x) && (x as number) >= 0);
const count = (v: unknown): number | undefined => (Number.isInteger(v) && (v as number) >= 0 ? (v as number) : undefined);
const bad = (what: string): HttpError => new HttpError(400, `local hand-off: ${what}`, { code: "bad_kv_stream" });

function parseStage(body: unknown): Stage {
  const b = (body ?? {}) as Record<string, unknown>;
  if (!ints(b.tokens)) throw bad("tokens must be an array of token ids");
  if (!ints(b.rows) || b.rows.length % 2 !== 0) throw bad("rows must be offset, size pairs");
  if (typeof b.region !== "string" || typeof b.meta !== "string") throw bad("region and meta must be strings");
  const size = count(b.size);
  if (size === undefined || size < 8) throw bad("size must be the state's byte count");
  return { model: b.model, tokens: b.tokens, cachedTokens: count(b.cachedTokens) ?? 0, region: b.region, size, meta: Buffer.from(b.meta, "base64"), rows: Float64Array.from(b.rows) };
}

/** Prefill side: decode base URLs not to try locally again before the time given (their last local hand-off could not go). */
const notLocalUntil = new Map<string, number>();
const NOT_LOCAL_MS = 60_000;
let mappings: RegionMappings | undefined;

/** The prefill pod's mappings of decode pods' regions, when this process can map regions and its runtime can export into them. */
export async function localTarget(deps: HandoffDeps, decodeUrl: string): Promise<RegionMappings | undefined> {
  if (!mayGoLocal(deps, decodeUrl)) return undefined;
  const info = await probe(decodeUrl, identityHeaders(deps.fleetToken?.()));
  if (!info?.local || info.local.node !== nodeIdentity() || !sameLayout(deps, info.layout)) return undefined;
  const addon = await addonRegions();
  if (!addon) return undefined;
  mappings ??= new RegionMappings(addon);
  return mapsProbe(mappings, decodeUrl, info.local.probe) ? mappings : undefined;
}

/** Probe regions this process has mapped (true) or could not map (false), by name. */
const probed = new Map<string, boolean>();

/** Whether this process can map the decode pod's regions: its probe region mapped once (and kept mapped). */
function mapsProbe(m: RegionMappings, decodeUrl: string, name: string): boolean {
  let ok = probed.get(name);
  if (ok === undefined) {
    try {
      m.map(name, PROBE_BYTES);
      ok = true;
    } catch (err) {
      ok = false;
      console.error(`llmfleet: KV hand-offs to ${decodeUrl} go over the network: its memory cannot be mapped here (${(err as Error).message}); on one machine, pods share it with hostIPC (docs/concepts.md, the local path)`);
    }
    probed.set(name, ok);
  }
  return ok;
}

/** Whether this pod may try a local hand-off to the decode pod at all (before asking it). */
function mayGoLocal(deps: HandoffDeps, decodeUrl: string): boolean {
  if (process.env.LLMFLEET_KV_LOCAL === "0" || (deps.transport ?? "auto") !== "auto") return false;
  if ((notLocalUntil.get(decodeUrl) ?? 0) > Date.now()) return false;
  return deps.service.runtime.sequences.every((s) => s.exportStateTo && s.stateSize);
}

/**
 * Whether the decode pod's KV layout is this pod's: the rows land at the offsets they were written
 * at, so a state cannot be rewritten for another layout on the way (KV streams, V transposed), as
 * the network path does (normaliseSeqState). Pods of one Model share it.
 */
function sameLayout(deps: HandoffDeps, layout: KvTransportInfo["layout"]): boolean {
  const { info } = deps.service.runtime;
  return layout.streams === info.kvStreams && layout.vTransposed === !info.flashAttention;
}

/** After a local hand-off that could not go: the network path for this decode pod for a while. */
export function notLocal(decodeUrl: string, why: string): void {
  if (!notLocalUntil.has(decodeUrl) || (notLocalUntil.get(decodeUrl) ?? 0) < Date.now()) {
    console.error(`llmfleet: KV hand-offs to ${decodeUrl} go over the network for ${NOT_LOCAL_MS / 1000} s: the local path failed (${why})`);
  }
  notLocalUntil.set(decodeUrl, Date.now() + NOT_LOCAL_MS);
}

async function post(deps: HandoffDeps, url: string, body: unknown): Promise<globalThis.Response> {
  try {
    return await fetch(url, {
      method: "POST",
      headers: { ...identityHeaders(deps.fleetToken?.()), "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(deps.sendTimeoutMs ?? 30_000),
    });
  } catch (err) {
    throw new LocalUnavailable(`${url}: ${(err as Error).message}`);
  }
}

/** The pod that lent the region, when it named a usable http(s) URL; else the URL asked. */
const stagingUrl = (named: string | undefined, asked: string): string => (named ? httpUrl(named) : undefined) ?? asked;

/** A region of the decode pod's for `bytes`, mapped here; LocalUnavailable when there is none to lend or it cannot be mapped. */
async function lentRegion(deps: HandoffDeps, m: RegionMappings, decodeUrl: string, bytes: number): Promise<{ name: string; handle: number; decodeUrl: string }> {
  const res = await post(deps, `${decodeUrl}/internal/kv-local/reserve`, { bytes });
  if (!res.ok) throw new LocalUnavailable(`reserve: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
  const r = (await res.json()) as { region: string; bytes: number; decodeUrl?: string };
  try {
    return { name: r.region, handle: m.map(r.region, r.bytes), decodeUrl: stagingUrl(r.decodeUrl, decodeUrl) };
  } catch (err) {
    throw new LocalUnavailable((err as Error).message);
  }
}

/**
 * The prompt computed here, its state's rows exported into a region the decode pod lent, the
 * headers staged there. LocalUnavailable (before anything is staged) sends the caller to the
 * network path; the prompt's KV stays in this pod's sequence, so computing it again costs nothing.
 */
export async function prefillLocal(
  deps: HandoffDeps,
  m: RegionMappings,
  w: { prepared: PreparedRequest; handoffId: string; decodeUrl: string; sampleFirst: boolean; signal: AbortSignal },
): Promise<PrefillResponse> {
  const { service, metrics } = deps;
  const t0 = performance.now();
  let region = "";
  let at = w.decodeUrl;
  const exportTo = async (seq: RuntimeSequence): Promise<LocalState> => {
    const lent = await lentRegion(deps, m, w.decodeUrl, await seq.stateSize!());
    region = lent.name;
    at = lent.decodeUrl;
    return seq.exportStateTo!(lent.handle);
  };
  const out = await service.prefillLocal(w.prepared, w.signal, { sampleFirst: w.sampleFirst, exportTo });
  const t1 = performance.now();
  const header = handoffHeader(service, w.prepared, w.handoffId, out.prefixHitTokens);
  if (out.firstToken !== undefined) metrics.handoffFirstTokens.inc();
  const { local } = out;
  const stage = async (): Promise<number> => {
    const t = performance.now();
    const res = await post(deps, `${at}/internal/kv-local/${encodeURIComponent(w.handoffId)}`, {
      model: header.model,
      tokens: local.tokens,
      cachedTokens: header.cachedTokens,
      region,
      size: local.size,
      meta: local.meta.toString("base64"),
      rows: Array.from(local.rows),
    });
    if (res.status !== 204) throw new LocalUnavailable(`stage: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
    metrics.handoffs.inc({ path: "local", outcome: "ok" });
    metrics.handoffBytes.observe(local.size);
    metrics.handoffSeconds.observe({ stage: "send" }, (performance.now() - t) / 1000);
    return performance.now() - t;
  };
  metrics.handoffSeconds.observe({ stage: "export" }, out.exportMs / 1000);
  // The rows are in the decode pod's memory already: with the first token sampled here and a
  // decode pod that waits for a state on its way, the answer need not wait for the stage call.
  const ahead = out.firstToken !== undefined && at === w.decodeUrl && (await probe(at, identityHeaders(deps.fleetToken?.())))?.awaitsState === true;
  if (ahead) {
    stage().catch((err: unknown) => failedBehind(deps.fleetToken?.(), { decodeUrl: at, handoffId: w.handoffId, what: "local hand-off", message: (err as Error).message }));
    metrics.handoffsAhead.inc();
  }
  const sendMs = ahead ? 0 : await stage();
  return {
    handoffId: w.handoffId,
    decodeUrl: at,
    promptTokens: w.prepared.prompt.length,
    prefixHitTokens: out.prefixHitTokens,
    stateBytes: local.size,
    prefillMs: t1 - t0,
    exportMs: out.exportMs,
    sendMs,
    streams: 0,
    parts: 1,
    path: "local",
    ...(out.firstToken === undefined ? {} : { firstToken: out.firstToken }),
    ...(ahead ? { early: true } : {}),
  };
}
