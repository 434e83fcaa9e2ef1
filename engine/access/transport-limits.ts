/**
 * Transport limits of every engine role's HTTP server (router, prefill, decode, aggregated,
 * kvstore), against clients that hold connections instead of using them:
 * - a request's headers must arrive within `headersTimeoutMs` (slow-loris), checked every second
 *   (Node checks every 30 s by default, so a slow client kept its connection up to 90 s);
 * - a connection that sends nothing is closed after the same time (Node's own checker only
 *   watches connections that have begun a request);
 * - headers are at most 16 KiB (431 beyond) and 100 lines; an idle kept-alive connection closes
 *   after 5 s. Bodies are bounded where they are parsed (express.json / express.raw limits).
 */
import type { Server, ServerOptions } from "node:http";
import type { Socket } from "node:net";

export interface TransportLimits {
  /** Longest time for a request's headers, and for a new connection's first byte. Default 10 s. */
  headersTimeoutMs: number;
}

export const DEFAULT_TRANSPORT_LIMITS: TransportLimits = { headersTimeoutMs: 10_000 };

/** createServer options: header size and timeouts. requestTimeout stays Node's 300 s: KV hand-offs upload large bodies. */
export function serverOptions(limits: TransportLimits): ServerOptions {
  return { headersTimeout: limits.headersTimeoutMs, requestTimeout: 300_000, connectionsCheckingInterval: 1_000, maxHeaderSize: 16 * 1024, keepAliveTimeout: 5_000 };
}

/** Closes connections that send no byte within the headers timeout; caps header lines. */
export function hardenServer(server: Server, limits: TransportLimits): void {
  server.maxHeadersCount = 100;
  server.on("connection", (socket: Socket) => {
    const timer = setTimeout(() => socket.destroy(), limits.headersTimeoutMs);
    timer.unref();
    socket.once("data", () => clearTimeout(timer));
    socket.once("close", () => clearTimeout(timer));
  });
}
