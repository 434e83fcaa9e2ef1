/**
 * The prefill pod's side of the native TCP hand-off (kv-transport.ts): what a decode base URL
 * offers (probed, cached), the state streamed to it over --kv-streams connections, its answer
 * turned into the staging pod's URL or a 429/502 that says why, and the fallback to HTTP when
 * nobody listens.
 */
import { HttpError } from "../http/http-error.ts";
import { httpUrl } from "../http/http-url.ts";
import { identityHeaders } from "../access/identity.ts";
import type { HandoffDeps } from "./handoff-routes.ts";
import type { CompletionService, PreparedRequest } from "../serving/completion-service.ts";
import {
  defaultTcpStreams,
  KV_SEND_STATUS,
  kvSendErrorCode,
  kvStreamAddon,
  partId,
  TCP_CHUNK_BYTES,
  TCP_STREAMS_MAX,
  type KvSendResult,
  type KvStreamAddon,
  type KvTransportInfo,
} from "./kv-transport.ts";

/** What the prefill pod knows of a decode base URL's transport, re-probed after PROBE_TTL_MS. */
interface Probe {
  info?: KvTransportInfo;
  /** When the answer stops being used. */
  until: number;
}
const PROBE_TTL_MS = 30_000;
/**
 * A probe that got no answer (its 2 s timeout on a loaded machine, the pod restarting) is kept
 * this long only: for 30 s every hand-off to that pod would take HTTP, no first token ahead.
 */
const FAILED_PROBE_TTL_MS = 3_000;
const probes = new Map<string, Probe>();

/** What a decode base URL offers (GET /internal/kv-transport, cached PROBE_TTL_MS); undefined when it does not say. */
export async function probe(base: string, headers: Record<string, string>): Promise<KvTransportInfo | undefined> {
  const known = probes.get(base);
  if (known && performance.now() < known.until) return known.info;
  let info: KvTransportInfo | undefined;
  let ttl = PROBE_TTL_MS;
  try {
    const res = await fetch(`${base}/internal/kv-transport`, { headers, signal: AbortSignal.timeout(2_000) });
    info = res.ok ? ((await res.json()) as KvTransportInfo) : undefined; // an older decode pod: 404, HTTP only
  } catch {
    info = undefined; // unreachable now: the HTTP PUT reports the real error
    ttl = FAILED_PROBE_TTL_MS;
  }
  probes.set(base, { info, until: performance.now() + ttl });
  return info;
}

export type HandoffHeader = {
  handoffId: string;
  model: string;
  tokens: number[];
  vTransposed: boolean;
  cachedTokens: number;
  /** One part of a hand-off sent in parts (handoff-parts.ts): its index and the number of parts. */
  part?: { index: number; parts: number };
};

/** The hand-off header of a prepared request's context (its prompt but the last token). */
export function handoffHeader(service: CompletionService, prepared: PreparedRequest, handoffId: string, cachedTokens: number): HandoffHeader {
  const { modelId, flashAttention } = service.runtime.info;
  return { handoffId, model: modelId, tokens: prepared.prompt.slice(0, -1), vTransposed: !flashAttention, cachedTokens };
}

/** A URL's host as a socket connects to it (an IPv6 address without its brackets). */
export const hostOf = (url: string): string => new URL(url).hostname.replace(/^\[|\]$/g, "");

/** The URL the decode pod named in its TCP answer: its advertised URL, or the IP the connection reached plus its HTTP port. */
function tcpStagedUrl(message: string, base: string, info: KvTransportInfo): string {
  if (/^https?:\/\//.test(message)) return httpUrl(message) ?? base;
  if (!message) return base;
  const port = info.httpPort ?? new URL(base).port;
  return message.includes(":") ? `http://[${message}]:${port}` : `http://${message}:${port}`;
}

export class TcpUnavailable extends Error {}

export interface TcpTarget {
  addon: KvStreamAddon;
  base: string;
  info: KvTransportInfo;
  host: string;
  port: number;
}

/** The staged URL from the decode pod's answer; a refusal is a 429 (full) or a 502. */
function tcpAnswer(t: TcpTarget, r: KvSendResult): string {
  if (r.status === KV_SEND_STATUS.ok) return tcpStagedUrl(r.message, t.base, t.info);
  const where = `${t.host}:${t.port}`;
  if (r.status === KV_SEND_STATUS.full) {
    throw new HttpError(429, `KV hand-off to ${where} refused: ${r.message}`, { code: "handoff_store_full", headers: { "Retry-After": "1" } });
  }
  throw new HttpError(502, `KV hand-off to ${where} refused (status ${r.status}): ${r.message}`, { code: "handoff_failed" });
}

/**
 * Streams the state to the decode pod's TCP port. Nobody listening there is TcpUnavailable (the
 * caller falls back to HTTP); a decode pod that dies or stalls mid-stream (its partial state is
 * freed on its side) is tried once more on a new connection, which behind a Service may reach
 * another pod, then a 502 that says why.
 */
/** Connections for one hand-off: this pod's setting, but several only to a listener that says it takes them (an older decode pod speaks v1). */
function streamsFor(deps: HandoffDeps, t: TcpTarget): number {
  return Math.max(1, Math.min(deps.tcpStreams ?? defaultTcpStreams(), t.info.tcpStreams ?? 1, TCP_STREAMS_MAX));
}

/** A decode pod that died or stalled mid-stream: another connection (another pod behind a Service) may do. */
const retryable = (code: string | undefined): boolean => code === "closed" || code === "timeout";

export interface Sent {
  stagedUrl: string;
  streams: number;
  /** Seconds on the wire (kvSend's own). */
  seconds: number;
}

/** The JSON the TCP hand-off carries beside the state: the tokens travel in the state's own header (seqStateTokens). */
function handoffJson(header: HandoffHeader, state: Buffer): string {
  const { handoffId, model, vTransposed, cachedTokens, part } = header;
  return JSON.stringify({ handoffId, model, tokens: state.readUInt32LE(8) /* ggsq: magic, version, token count */, vTransposed, cachedTokens, ...part });
}

/** A failed kvSend: rethrown as TcpUnavailable (nobody listening), a 502, or nothing when it is worth another try. */
function failedSend(deps: HandoffDeps, err: unknown, attempt: number): void {
  if (err instanceof HttpError) throw err;
  const code = kvSendErrorCode(err);
  deps.metrics.handoffFailures.inc({ reason: `tcp_${code ?? "error"}` });
  if (code === "connect") throw new TcpUnavailable((err as Error).message, { cause: err });
  if (attempt >= 2 || !retryable(code)) throw new HttpError(502, (err as Error).message, { code: "handoff_failed", cause: err });
}

export async function sendTcp(deps: HandoffDeps, t: TcpTarget, header: HandoffHeader, state: Buffer): Promise<Sent> {
  const json = handoffJson(header, state);
  const id = header.part ? partId(header.handoffId, header.part.index) : header.handoffId;
  const streams = streamsFor(deps, t);
  const timeoutMs = deps.sendTimeoutMs ?? 30_000;
  for (let attempt = 1; ; attempt++) {
    try {
      const sent = await t.addon.kvSend(state, t.host, t.port, id, json, TCP_CHUNK_BYTES, timeoutMs, streams);
      return { stagedUrl: tcpAnswer(t, sent), streams: sent.streams ?? 1, seconds: sent.seconds };
    } catch (err) {
      failedSend(deps, err, attempt);
    }
  }
}

/** Where TCP can go for this decode base URL, or why not (mode tcp makes that an error). */
export async function tcpTarget(base: string, headers: Record<string, string>): Promise<TcpTarget | string> {
  const [addon, info] = await Promise.all([kvStreamAddon(), probe(base, headers)]);
  if (!addon) return "the native addon (kv-stream) is not available on this pod";
  if (!info?.tcpPort) return `decode pod ${base} offers no TCP hand-off port`;
  return { addon, base, info, host: hostOf(base), port: info.tcpPort };
}

/** The TCP hand-off, or undefined when the caller should fall back to HTTP (auto mode). */
export async function tryTcp(deps: HandoffDeps, base: string, header: HandoffHeader, state: Buffer): Promise<Sent | undefined> {
  const strict = deps.transport === "tcp";
  const target = await tcpTarget(base, identityHeaders(deps.fleetToken?.()));
  if (typeof target === "string") {
    if (strict) throw new HttpError(502, `--kv-transport tcp: ${target}`, { code: "handoff_failed" });
    return undefined;
  }
  try {
    return await sendTcp(deps, target, header, state);
  } catch (err) {
    if (!(err instanceof TcpUnavailable)) throw err;
    if (strict) throw new HttpError(502, err.message, { code: "handoff_failed", cause: err });
    // The port is not reachable from here (a Service without it, a firewall): HTTP until the next probe.
    probes.set(base, { info: { ...target.info, tcpPort: undefined }, until: performance.now() + PROBE_TTL_MS });
    return undefined;
  }
}

