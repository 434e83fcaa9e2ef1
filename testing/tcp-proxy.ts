// A TCP proxy in front of the real API server that a test can cut: every open connection
// (watches included) is dropped, as a network fault or an API server restart would. Or stall:
// connections stay open and new ones are accepted, but no byte passes (a dead link that never closes).
import net from "node:net";

export interface TcpProxy {
  port: number;
  /** Drops every open connection and refuses new ones until resume(). */
  cut(): void;
  /** Stops every byte both ways without closing anything, until resume(). */
  stall(): void;
  resume(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  let refusing = false;
  let stalled = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, targetHost);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => s.destroy());
    }
    // Bytes that arrive while stalled are dropped, as on a dead link.
    client.on("data", (d: Buffer) => stalled || upstream.write(d));
    upstream.on("data", (d: Buffer) => stalled || client.write(d));
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    cut: () => {
      refusing = true;
      for (const s of sockets) s.destroy();
    },
    stall: () => {
      stalled = true;
    },
    resume: () => {
      refusing = false;
      stalled = false;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
