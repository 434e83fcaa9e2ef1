// /healthz (the process runs), /readyz (caches synced and, when elected, leading or standing by
// healthily) and /metrics, on one port.
import http from "node:http";
import type { Registry } from "prom-client";

export interface HealthChecks {
  live: () => boolean;
  ready: () => boolean;
}

export function startHealthServer(port: number, checks: HealthChecks, registry: Registry, host = "0.0.0.0"): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    void respond(req, res, checks, registry);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve(server));
  });
}

async function respond(req: http.IncomingMessage, res: http.ServerResponse, checks: HealthChecks, registry: Registry): Promise<void> {
  const path = (req.url ?? "/").split("?")[0];
  if (path === "/metrics") {
    res.writeHead(200, { "Content-Type": registry.contentType });
    res.end(await registry.metrics());
    return;
  }
  const check = path === "/healthz" ? checks.live : path === "/readyz" ? checks.ready : undefined;
  if (!check) {
    res.writeHead(404).end("not found\n");
    return;
  }
  const ok = check();
  res.writeHead(ok ? 200 : 503, { "Content-Type": "text/plain" }).end(ok ? "ok\n" : "not ready\n");
}
