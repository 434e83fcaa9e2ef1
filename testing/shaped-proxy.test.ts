/** The shaping proxy enforces its rate each way: 1 MB through 10 Mbit/s takes ~0.8 s; so does the proxy in its own process. */
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { mbitPerSecond, startShapedProxy } from "./shaped-proxy.ts";
import { startShapedProxyProcess } from "./shaped-proxy-process.ts";

const MB = 1_000_000;

/** A server that sends `bytes` to each client and counts what each client sends it. */
async function startServer(bytes: number): Promise<{ port: number; received: () => number; server: net.Server }> {
  let received = 0;
  const server = net.createServer((s) => {
    s.on("data", (d: Buffer) => (received += d.length));
    s.on("error", () => s.destroy());
    s.end(Buffer.alloc(bytes, 7));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { port: (server.address() as net.AddressInfo).port, received: () => received, server };
}

/** Seconds until `bytes` arrived from the proxy (and, when `send`, until the server got `send` bytes). */
async function transfer(port: number, bytes: number, send = 0, received?: () => number): Promise<number> {
  const t0 = performance.now();
  const client = net.connect(port, "127.0.0.1");
  if (send > 0) client.write(Buffer.alloc(send, 1));
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    client.on("data", (d: Buffer) => (got += d.length));
    client.on("error", reject);
    client.on("end", () => resolve());
  });
  while (received && received() < send) await new Promise((r) => setTimeout(r, 5));
  client.destroy();
  assert.equal(got, bytes);
  return (performance.now() - t0) / 1000;
}

test("1 MB from the server through 10 Mbit/s takes 0.8 s ± 20 %", async () => {
  const target = await startServer(MB);
  await using proxy = await startShapedProxy("127.0.0.1", target.port, mbitPerSecond(10));
  const seconds = await transfer(proxy.port, MB);
  target.server.close();
  assert.ok(seconds > 0.64 && seconds < 0.96, `took ${seconds.toFixed(3)} s`);
});

test("1 MB to the server through 10 Mbit/s takes 0.8 s ± 20 %, and the rate can change", async () => {
  const target = await startServer(1000);
  await using proxy = await startShapedProxy("127.0.0.1", target.port, mbitPerSecond(10));
  const seconds = await transfer(proxy.port, 1000, MB, target.received);
  assert.ok(seconds > 0.64 && seconds < 0.96, `took ${seconds.toFixed(3)} s`);
  proxy.setRate(mbitPerSecond(40));
  const faster = await transfer(proxy.port, 1000, MB, () => target.received() - MB);
  target.server.close();
  assert.ok(faster > 0.16 && faster < 0.24, `took ${faster.toFixed(3)} s at 40 Mbit/s`);
});

test("unshaped (Infinity) forwards at once", async () => {
  const target = await startServer(4 * MB);
  await using proxy = await startShapedProxy("127.0.0.1", target.port, Infinity);
  const seconds = await transfer(proxy.port, 4 * MB);
  target.server.close();
  assert.ok(seconds < 0.5, `took ${seconds.toFixed(3)} s`);
});

test("in its own process (shaped-proxy-process.ts): the same rate, and a rate change applies once acknowledged", async () => {
  const target = await startServer(MB);
  await using proxy = await startShapedProxyProcess("127.0.0.1", target.port, mbitPerSecond(10));
  const seconds = await transfer(proxy.port, MB);
  assert.ok(seconds > 0.64 && seconds < 0.96, `took ${seconds.toFixed(3)} s`);
  await proxy.setRate(mbitPerSecond(40));
  const faster = await transfer(proxy.port, MB);
  target.server.close();
  assert.ok(faster > 0.16 && faster < 0.24, `took ${faster.toFixed(3)} s at 40 Mbit/s`);
});

test("a one-way delay holds each chunk that long each way, in order (a round trip is twice it), in its own process too", async () => {
  // An echo server: a round trip through the proxy is one delay up and one down.
  const echo = net.createServer((s) => {
    s.on("data", (d: Buffer) => s.write(d));
    s.on("error", () => s.destroy());
  });
  await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
  const port = (echo.address() as net.AddressInfo).port;
  await using inProcess = await startShapedProxy("127.0.0.1", port, Infinity);
  inProcess.setDelay(40);
  await using child = await startShapedProxyProcess("127.0.0.1", port, Infinity);
  await child.setDelay(40);
  for (const proxyPort of [inProcess.port, child.port]) {
    const client = net.connect(proxyPort, "127.0.0.1");
    const sent = Buffer.from(Array.from({ length: 200 }, (_, i) => `chunk ${i};`).join(""));
    const t0 = performance.now();
    let got = Buffer.alloc(0);
    const back = new Promise<void>((resolve) => client.on("data", (d: Buffer) => (got = Buffer.concat([got, d])).length >= sent.length && resolve()));
    for (let i = 0; i < sent.length; i += 64) client.write(sent.subarray(i, i + 64));
    await back;
    assert.ok(performance.now() - t0 >= 80, `a round trip took ${(performance.now() - t0).toFixed(0)} ms`);
    assert.deepEqual(got, sent, "every byte, in order");
    client.destroy();
  }
  echo.close();
});
