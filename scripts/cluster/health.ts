// Health probes and a polling loop that fails fast when the probed process has died.
import { readFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { setTimeout as sleep } from "node:timers/promises";
import type { CertFiles } from "./certs.ts";

/** TLS material for probing the apiserver: the cluster CA plus a client identity. */
export interface TlsClient {
  ca: string;
  client: CertFiles;
}

export interface HttpResult {
  status: number;
  body: string;
}

/**
 * How to talk TLS: verify against the CA and present a client cert, or "insecure" for the
 * self-signed health endpoints of controller-manager and scheduler (no credentials sent).
 */
export type Tls = TlsClient | "insecure";

function tlsOptions(tls?: Tls): object {
  if (tls === undefined) return {};
  if (tls === "insecure") return { rejectUnauthorized: false };
  return { ca: readFileSync(tls.ca), cert: readFileSync(tls.client.cert), key: readFileSync(tls.client.key) };
}

/** One GET with a short timeout. */
export function get(url: string, tls?: Tls, timeoutMs = 5_000): Promise<HttpResult> {
  const options = tlsOptions(tls);
  const request = url.startsWith("https:") ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(url, { ...options, method: "GET", timeout: timeoutMs, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on("error", reject);
    req.end();
  });
}

/** GET until HTTP 200, as a boolean probe (connection refused is simply "not yet"). */
export async function isOk(url: string, tls?: Tls): Promise<boolean> {
  try {
    return (await get(url, tls)).status === 200;
  } catch {
    return false;
  }
}

export interface WaitOptions {
  what: string;
  timeoutMs: number;
  intervalMs?: number;
  /** Checked every round: when it returns a message the wait fails at once (process exited). */
  fatal?: () => string | undefined;
}

/** Polls `probe` until it returns true; throws on timeout or when `fatal` reports a problem. */
export async function waitUntil(probe: () => Promise<boolean>, opts: WaitOptions): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    if (await probe()) return;
    const fatal = opts.fatal?.();
    if (fatal) throw new Error(`${opts.what}: ${fatal}`);
    if (Date.now() > deadline) throw new Error(`${opts.what}: not ready after ${opts.timeoutMs / 1000}s`);
    await sleep(opts.intervalMs ?? 250);
  }
}
