/**
 * Graceful shutdown that never cuts a stream: the engine's HTTP server, with a drain. On drain()
 * /ready answers 503 at once (Kubernetes takes the pod out of its Services), requests keep being
 * served for `delayMs` (endpoints take a moment to learn it), then the server stops accepting and
 * waits for the requests in flight — streams, KV hand-offs — to finish, at most `timeoutMs`, before
 * it closes what is left. The planners give pods a termination grace period that covers it.
 */
import { createServer, type RequestListener, type Server } from "node:http";
import { DEFAULT_TRANSPORT_LIMITS, hardenServer, serverOptions, type TransportLimits } from "../access/transport-limits.ts";

export interface DrainOptions {
  /** Keep serving new requests this long after readiness drops. */
  delayMs: number;
  /** Longest wait for the requests in flight once no new ones are accepted. */
  timeoutMs: number;
}

export interface DrainResult {
  /** Requests still running at the timeout, whose connections were closed. */
  cut: number;
  waitedMs: number;
}

export interface DrainingServer {
  server: Server;
  readonly draining: boolean;
  readonly inFlight: number;
  drain(opts: DrainOptions): Promise<DrainResult>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function drainingServer(app: RequestListener, limits: TransportLimits = DEFAULT_TRANSPORT_LIMITS): DrainingServer {
  let draining = false;
  /** After the delay: the listener is closed and idle connections go as soon as they are idle. */
  let closing = false;
  let inFlight = 0;
  let idle: (() => void) | undefined;
  const server = createServer(serverOptions(limits), (req, res) => {
    if (draining && req.url?.split("?")[0] === "/ready") {
      res.writeHead(503, { "content-type": "application/json", connection: "close" }).end(JSON.stringify({ ready: false, draining: true }));
      return;
    }
    inFlight++;
    // A response sent while draining says Connection: close, so the client does not send its next
    // request on a connection the drain is about to close (a POST lost there is not retried).
    if (draining) res.shouldKeepAlive = false;
    res.once("close", () => {
      inFlight--;
      // Not during the delay: a client may be sending its next request on a connection that went
      // idle a moment ago (it has not read the Connection: close yet, or it was idle since before
      // the drain), and closing it under that request loses it ("socket hang up"; 60 of 8,914
      // requests in bench:scale-router's rolling restart at 445 requests/s).
      if (closing) server.closeIdleConnections();
      if (inFlight === 0) idle?.();
    });
    app(req, res);
  });
  hardenServer(server, limits);
  const drained = (): Promise<void> => (inFlight === 0 ? Promise.resolve() : new Promise((r) => (idle = r)));
  return {
    server,
    get draining() {
      return draining;
    },
    get inFlight() {
      return inFlight;
    },
    async drain(opts: DrainOptions): Promise<DrainResult> {
      draining = true;
      const t0 = performance.now();
      await sleep(opts.delayMs);
      closing = true;
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      const timedOut = await Promise.race([drained().then(() => false), sleep(opts.timeoutMs).then(() => true)]);
      const cut = timedOut ? inFlight : 0;
      server.closeAllConnections();
      await closed;
      return { cut, waitedMs: Math.round(performance.now() - t0) };
    },
  };
}
