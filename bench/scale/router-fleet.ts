// The router bench's fleet on loopback: engine processes (aggregated role, the tiny synthetic
// model), a TCP proxy per upstream in front of them (so one router sees 100 distinct pods, each a
// real engine behind), and router processes, each started as the operator's router pod runs it.
// Each proxy notes which prompt markers ("P<id>|") it carried, so the bench knows which upstream
// a prefix went to.
import net from "node:net";
import { startServer, type RunningServer } from "../http/servers.ts";

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const ENGINE = ["--import", "tsx", "engine/main.ts"];

export async function startEngine(model: string, parallel: number): Promise<RunningServer> {
  const port = await freePort();
  const args = [...ENGINE, "--role", "aggregated", "--model", model, "--backend", "native", "--host", "127.0.0.1", "--port", String(port)];
  const sizing = ["--parallel", String(parallel), "--ctx-size", "128", "--batch-size", "512", "--threads", "1", "--max-queue", "4096"];
  return startServer(`engine:${port}`, process.execPath, [...args, ...sizing], { port, readyPath: "/ready", timeoutMs: 600_000 });
}

export interface RouterOptions {
  upstreams: string[];
  maxStreams: number;
  port?: number;
  drainDelaySeconds?: number;
}

export async function startRouter(o: RouterOptions): Promise<RunningServer> {
  const port = o.port ?? (await freePort());
  const args = [...ENGINE, "--role", "router", "--aggregated", o.upstreams.join(","), "--policy", "prefix-aware", "--host", "127.0.0.1", "--port", String(port)];
  const drain = ["--drain-delay-seconds", String(o.drainDelaySeconds ?? 2), "--drain-timeout-seconds", "60", "--max-streams", String(o.maxStreams)];
  return startServer(`router:${port}`, process.execPath, [...args, ...drain], { port, readyPath: "/ready", timeoutMs: 120_000 });
}

export interface MarkedProxy {
  url: string;
  /** Prompt marker id → times this proxy carried it. */
  seen: Map<number, number>;
  close(): void;
}

const MARKER = /"prompt":"P(\d+)\|/g;

/** A TCP proxy to `target` that records the prompt markers of the requests it carries. */
export async function startMarkedProxy(target: number): Promise<MarkedProxy> {
  const seen = new Map<number, number>();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => s.destroy());
    }
    client.on("data", (chunk: Buffer) => {
      for (const m of chunk.toString("latin1").matchAll(MARKER)) seen.set(Number(m[1]), (seen.get(Number(m[1])) ?? 0) + 1);
    });
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    url,
    seen,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** Which proxies carried each marker: marker → proxy indexes (in the order of `proxies`). */
export function routesByMarker(proxies: MarkedProxy[]): Map<number, number[]> {
  const out = new Map<number, number[]>();
  proxies.forEach((p, i) => {
    for (const [marker, n] of p.seen) out.set(marker, [...(out.get(marker) ?? []), ...Array<number>(n).fill(i)]);
  });
  return out;
}
