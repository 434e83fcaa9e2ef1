/**
 * A TCP proxy that shapes bandwidth, for benchmarks over loopback: each direction is one link of a
 * fixed rate in bytes/s (a token bucket shared by every connection, as one network path is), so
 * a store on loopback behaves like one behind a 100 Mbit/s or 1 Gbit/s path. The rate can change
 * between measurements (setRate); Infinity forwards as fast as loopback goes. Sources are paused
 * while their link holds more than HIGH_WATER bytes, so a fast sender does not fill memory.
 * No latency is added unless asked (setDelay): at these rates the transfer time of a multi-MB KV
 * entry dominates, but a store's many small requests (a lookup's HEADs) wait for round trips.
 */
import net from "node:net";

/** Bytes a link may queue before its senders are paused. */
const HIGH_WATER = 1 << 20;

export interface ShapedProxy extends AsyncDisposable {
  port: number;
  /** Bytes per second of each direction from now on; Infinity: unshaped. */
  setRate(bytesPerSecond: number): void;
  /** Milliseconds each chunk waits before it enters its link, each way (a round trip is twice it); set while nothing moves. */
  setDelay(oneWayMs: number): void;
}

/** Megabits per second as bytes per second (10^6 bits, as links are rated). */
export const mbitPerSecond = (mbit: number): number => (mbit * 1e6) / 8;

type Item = { dst: net.Socket; data: Buffer } | { dst: net.Socket; end: true };

/** One direction: a FIFO of chunks drained at `rate` bytes/s. */
class Link {
  private readonly queue: Item[] = [];
  private queued = 0;
  private tokens = 0;
  private last = performance.now();
  private timer: NodeJS.Timeout | undefined;
  private readonly paused = new Set<net.Socket>();

  constructor(public rate: number) {}

  send(src: net.Socket, item: Item): void {
    this.queue.push(item);
    if ("data" in item) this.queued += item.data.length;
    if (this.queued > HIGH_WATER && !this.paused.has(src)) {
      this.paused.add(src);
      src.pause();
    }
    this.pump();
  }

  /** Burst: 5 ms of the rate, at least 16 KiB (timers fire about every millisecond). */
  private refill(): void {
    const now = performance.now();
    const burst = Math.max(16 * 1024, this.rate * 0.005);
    this.tokens = Math.min(burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
  }

  private pump(): void {
    if (this.timer) return;
    this.refill();
    while (this.queue.length > 0 && (this.tokens > 0 || this.rate === Infinity)) this.forwardHead();
    if (this.queued <= HIGH_WATER / 2) this.resumeSenders();
    if (this.queue.length > 0) {
      const waitMs = Math.max(1, ((1 - this.tokens) / this.rate) * 1000);
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, waitMs);
    }
  }

  private forwardHead(): void {
    const head = this.queue[0]!;
    if (!("data" in head)) {
      this.queue.shift();
      head.dst.end();
      return;
    }
    const n = this.rate === Infinity ? head.data.length : Math.min(head.data.length, Math.ceil(this.tokens));
    if (!head.dst.destroyed) head.dst.write(head.data.subarray(0, n));
    this.tokens -= n;
    this.queued -= n;
    if (n === head.data.length) this.queue.shift();
    else head.data = head.data.subarray(n);
  }

  private resumeSenders(): void {
    for (const s of this.paused) s.resume();
    this.paused.clear();
  }

  /** Drops what is queued for a closed connection. */
  forget(dst: net.Socket): void {
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const item = this.queue[i]!;
      if (item.dst !== dst) continue;
      if ("data" in item) this.queued -= item.data.length;
      this.queue.splice(i, 1);
    }
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

function pipeThrough(src: net.Socket, dst: net.Socket, link: Link, delay: { ms: number }): void {
  // Timers of one delay fire in the order they were set: the bytes keep theirs.
  const send = (item: Item): void => void (delay.ms > 0 ? setTimeout(() => link.send(src, item), delay.ms) : link.send(src, item));
  src.on("data", (data: Buffer) => send({ dst, data }));
  src.on("end", () => send({ dst, end: true }));
  dst.on("close", () => link.forget(dst));
}

/** A proxy on 127.0.0.1 to targetHost:targetPort, shaped to `bytesPerSecond` each way. */
export async function startShapedProxy(targetHost: string, targetPort: number, bytesPerSecond: number): Promise<ShapedProxy> {
  const up = new Link(bytesPerSecond);
  const down = new Link(bytesPerSecond);
  const delay = { ms: 0 };
  const sockets = new Set<net.Socket>();
  // Half-open: each direction ends on its own, after its queued bytes (an end must not overtake them).
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const upstream = net.connect({ port: targetPort, host: targetHost, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    pipeThrough(client, upstream, up, delay);
    pipeThrough(upstream, client, down, delay);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    setRate: (bytesPerSecond) => {
      up.rate = bytesPerSecond;
      down.rate = bytesPerSecond;
    },
    setDelay: (oneWayMs) => {
      delay.ms = oneWayMs;
    },
    [Symbol.asyncDispose]: () => {
      up.close();
      down.close();
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
