/**
 * The prefill pod's side of a whole-state hand-off (handoff-routes.ts prefillHandler): the prompt
 * computed, its state moved to the decode pod by the best mechanism both can use (TCP, else the
 * HTTP PUT), before the answer (the late path) or, with the first token sampled here and a decode
 * pod that waits for a state on its way, behind it: the answer leaves once the token is sampled,
 * and the state is copied out of the engine and sent after it.
 */
import { Readable } from "node:stream";
import type { PreparedRequest } from "../serving/completion-service.ts";
import { HttpError } from "../http/http-error.ts";
import { httpUrl } from "../http/http-url.ts";
import { firstTokenEligible } from "../serving/first-token.ts";
import { identityHeaders } from "../access/identity.ts";
import { DECODE_URL_HEADER, type HandoffDeps, type PrefillResponse } from "./handoff-routes.ts";
import { handoffHeader, probe, tcpTarget, tryTcp, type HandoffHeader } from "./tcp-handoff.ts";
import { failedBehind } from "./staged-wait.ts";
import { countingBytes, encodeKvHandoff } from "./kv-wire.ts";
import type { HandoffPath } from "./kv-transport.ts";

/** The staging pod's URL from its answer, when it is a usable http(s) URL; else the URL the state was sent to. */
function stagedAt(res: globalThis.Response, sentTo: string): string {
  const named = res.headers.get(DECODE_URL_HEADER);
  return (named ? httpUrl(named) : undefined) ?? sentTo;
}

/** PUTs the state to the decode base URL; returns the URL of the pod that staged it. */
async function sendState(base: string, id: string, frames: Iterable<Buffer>, opts: { timeoutMs: number; headers: Record<string, string> }): Promise<string> {
  const url = `${base}/internal/kv/${encodeURIComponent(id)}`;
  const t0 = performance.now();
  const sent = { bytes: 0 };
  let res: globalThis.Response;
  try {
    res = await fetch(url, {
      method: "PUT",
      // One connection per hand-off: kube-proxy balances a Service's connections, not its
      // requests, so over a kept-alive connection every hand-off of this pod would reach the same
      // decode pod. A connect is nothing next to megabytes of KV state.
      headers: { ...opts.headers, "content-type": "application/octet-stream", connection: "close" },
      body: Readable.toWeb(Readable.from(countingBytes(frames, sent))) as ReadableStream,
      duplex: "half",
      signal: AbortSignal.timeout(opts.timeoutMs),
    } as RequestInit);
  } catch (err) {
    const after = `after ${((performance.now() - t0) / 1000).toFixed(1)} s, ${sent.bytes} bytes of the stream written`;
    throw new HttpError(502, `KV hand-off to ${url} failed (${after}): ${(err as Error).message}`, { code: "handoff_failed", cause: err });
  }
  if (!res.ok) {
    const text = await res.text().catch(() => "");
    const status = res.status === 429 ? 429 : 502;
    throw new HttpError(status, `KV hand-off to ${url} refused (${res.status}): ${text.slice(0, 300)}`, { code: "handoff_failed" });
  }
  return stagedAt(res, base);
}

/** Moves the state to the decode pod by the best mechanism both can use; says which one did. */
async function handOff(
  deps: HandoffDeps,
  base: string,
  header: HandoffHeader,
  state: Buffer,
): Promise<{ stagedUrl: string; path: HandoffPath; streams: number; wireSeconds?: number }> {
  let path: HandoffPath = deps.transport === "http" ? "http" : "tcp";
  try {
    const sent = path === "tcp" ? await tryTcp(deps, base, header, state) : undefined;
    if (sent) {
      deps.metrics.handoffs.inc({ path, outcome: "ok" });
      return { stagedUrl: sent.stagedUrl, streams: sent.streams, path, wireSeconds: sent.seconds };
    }
    path = "http";
    // The fleet token only: staging needs no tenant (the generate call carries it, from the router).
    const opts = { timeoutMs: deps.sendTimeoutMs ?? 30_000, headers: identityHeaders(deps.fleetToken?.()) };
    const stagedUrl = await sendState(base, header.handoffId, encodeKvHandoff(header, state), opts);
    deps.metrics.handoffs.inc({ path, outcome: "ok" });
    return { stagedUrl, path, streams: 1 };
  } catch (err) {
    deps.metrics.handoffs.inc({ path, outcome: "error" });
    throw err;
  }
}

/**
 * Whether this prefill pod samples the answer's first token (serving/first-token.ts): the request
 * allows it, the decode pod says it takes it, and no KV store here writes the state back (its
 * entries are of the prompt but its last token).
 */
export async function firstTokenHere(deps: HandoffDeps, prepared: PreparedRequest, decodeUrl: string): Promise<boolean> {
  if (deps.service.kvCache || !firstTokenEligible(prepared.parsed.sampling)) return false;
  return (await probe(decodeUrl, identityHeaders(deps.fleetToken?.())))?.firstToken === true;
}

/**
 * Decode base URLs a hand-off was staged at, not at another pod behind them (a Service in front of
 * several pods): to these a first token may go ahead of its state (firstTokenAhead), as the
 * router's generate call then reaches the pod the state goes to.
 */
const stagedAtBase = new Set<string>();

/**
 * Whether this hand-off answers the router with its first token before the state is sent, the
 * send going on behind (sendBehind): the decode pod waits for a state on its way (it says
 * awaitsState) and is known to stage at its own URL. The client's first token then waits for the
 * prompt and nothing of the transfer. LLMFLEET_FIRST_TOKEN_AHEAD=0 turns it off.
 */
async function firstTokenAhead(deps: HandoffDeps, decodeUrl: string): Promise<boolean> {
  if (process.env.LLMFLEET_FIRST_TOKEN_AHEAD === "0" || !stagedAtBase.has(decodeUrl)) return false;
  const headers = identityHeaders(deps.fleetToken?.());
  if ((await probe(decodeUrl, headers))?.awaitsState !== true) return false;
  // Over TCP only where it can go now: a pod that offers none gets the late path's clear error
  // (--kv-transport tcp) or its HTTP fallback (auto), not a send that fails behind the answer.
  return deps.transport === "http" || typeof (await tcpTarget(decodeUrl, headers)) !== "string";
}

/** A send's figures in /metrics. */
function observeSent(deps: HandoffDeps, stateBytes: number, sendMs: number, wireSeconds: number | undefined): void {
  deps.metrics.handoffBytes.observe(stateBytes);
  deps.metrics.handoffSeconds.observe({ stage: "send" }, sendMs / 1000);
  // The native sender's own time (connect to the decode pod's "staged"): send less this is JavaScript around it.
  if (wireSeconds !== undefined) deps.metrics.handoffSeconds.observe({ stage: "wire" }, wireSeconds);
}

/**
 * The state sent after the router has its answer. A send that fails is told to the decode pod,
 * whose generate call then computes the prompt itself rather than wait out AWAIT_STATE_MS.
 */
function sendBehind(deps: HandoffDeps, w: { decodeUrl: string; header: HandoffHeader; exported: Promise<{ state: Buffer; exportMs: number }> }): void {
  const send = async (): Promise<void> => {
    const { state, exportMs } = await w.exported;
    deps.metrics.handoffSeconds.observe({ stage: "export" }, exportMs / 1000);
    const t0 = performance.now();
    // Read before the release: a pool block given back is detached, and its length reads 0.
    const bytes = state.length;
    const sent = await handOff(deps, w.decodeUrl, w.header, state);
    deps.service.runtime.releaseState?.(state);
    observeSent(deps, bytes, performance.now() - t0, sent.wireSeconds);
  };
  send().catch((err: unknown) =>
    failedBehind(deps.fleetToken?.(), { decodeUrl: w.decodeUrl, handoffId: w.header.handoffId, what: "hand-off", message: (err as Error).message }),
  );
}

/**
 * The prompt computed here and its first token sampled (serving/first-token.ts). With a decode pod
 * that waits for a state on its way (firstTokenAhead) the answer leaves before the state is even
 * copied out of the engine: the export and the send go on behind it. Else, or with no room left
 * in the context to sample, the state is handed off first.
 */
async function prefillFirst(deps: HandoffDeps, w: { prepared: PreparedRequest; handoffId: string; decodeUrl: string; signal: AbortSignal }): Promise<PrefillResponse> {
  const { service, metrics } = deps;
  const t0 = performance.now();
  const ahead = await firstTokenAhead(deps, w.decodeUrl);
  const { firstToken, prefixHitTokens, exported } = await service.prefillAhead(w.prepared, w.signal);
  if (firstToken !== undefined) metrics.handoffFirstTokens.inc();
  if (firstToken === undefined || !ahead) {
    const { state, exportMs } = await exported;
    return handOffLate(deps, { ...w, state, held: false, prefixHitTokens, exportMs, t0, ...(firstToken === undefined ? {} : { firstToken }) });
  }
  // LLMFLEET_EXPORT_BEHIND=0: the answer waits for the export (bench:http's tcp-export-first baseline).
  if (process.env.LLMFLEET_EXPORT_BEHIND === "0") await exported;
  const header = handoffHeader(service, w.prepared, w.handoffId, prefixHitTokens);
  header.tokens = w.prepared.prompt; // the state is of the whole prompt
  metrics.handoffsAhead.inc();
  sendBehind(deps, { decodeUrl: w.decodeUrl, header, exported });
  const path = deps.transport === "http" ? "http" : "tcp";
  const answer = { handoffId: w.handoffId, decodeUrl: w.decodeUrl, promptTokens: w.prepared.prompt.length, prefixHitTokens, prefillMs: performance.now() - t0 };
  return { ...answer, stateBytes: 0, exportMs: 0, sendMs: 0, streams: 0, parts: 1, path, firstToken, early: true };
}

/** The prompt computed here, then its state handed to the decode pod whole (or, its first token ahead, exported and sent behind the answer). */
export async function prefillWhole(
  deps: HandoffDeps,
  w: { prepared: PreparedRequest; handoffId: string; decodeUrl: string; signal: AbortSignal },
): Promise<PrefillResponse> {
  if (await firstTokenHere(deps, w.prepared, w.decodeUrl)) return prefillFirst(deps, w);
  const t0 = performance.now();
  const { state, prefixHitTokens, exportMs, held } = await deps.service.prefillState(w.prepared, w.signal);
  return handOffLate(deps, { ...w, state, held, prefixHitTokens, exportMs, t0 });
}

/** The state (exported in `exportMs`) handed off before the answer (the late path); answers with what it took. */
async function handOffLate(
  deps: HandoffDeps,
  w: { prepared: PreparedRequest; handoffId: string; decodeUrl: string; state: Buffer; held: boolean; prefixHitTokens: number; exportMs: number; t0: number; firstToken?: number },
): Promise<PrefillResponse> {
  const { service } = deps;
  const { prepared, decodeUrl, state, firstToken } = w;
  deps.metrics.handoffSeconds.observe({ stage: "export" }, w.exportMs / 1000);
  const t1 = performance.now();
  const stateBytes = state.length;
  const header = handoffHeader(service, prepared, w.handoffId, w.prefixHitTokens);
  // With the first token sampled here the state is of the whole prompt.
  if (firstToken !== undefined) header.tokens = prepared.prompt;
  const sent = await handOff(deps, decodeUrl, header, state);
  if (sent.stagedUrl === decodeUrl) stagedAtBase.add(decodeUrl);
  // Sent, and read by nothing else: its block back to the pool now. After a failure the state is
  // left to the garbage collector, as an HTTP body may still hold a view of it.
  if (!w.held) service.runtime.releaseState?.(state);
  const sendMs = performance.now() - t1;
  observeSent(deps, stateBytes, sendMs, sent.wireSeconds);
  const { stagedUrl, path, streams } = sent;
  const done = { handoffId: w.handoffId, promptTokens: prepared.prompt.length, prefixHitTokens: w.prefixHitTokens, stateBytes, prefillMs: t1 - w.t0, exportMs: w.exportMs, parts: 1 };
  return { ...done, decodeUrl: stagedUrl, sendMs, streams, path, ...(firstToken === undefined ? {} : { firstToken }) };
}
