/**
 * The shaping proxy (shaped-proxy.ts) in its own process, for benchmarks whose pods share the
 * benchmark's process: a link is not part of a pod's event loop, and in the pod's process every
 * chunk waited for the pod's synchronous work (a batch of blocks decoded, 5-15 ms) while the object
 * store's bytes stood still (bench:kv-link, docs/kv-store.md). The rate (a number or "inf") or the
 * one-way delay ("delay MS") changes by a line on the child's stdin, acknowledged on its stdout.
 * Run as a program: `tsx testing/shaped-proxy-process.ts HOST PORT`; prints its port once listening.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import { startShapedProxy } from "./shaped-proxy.ts";

export interface ShapedProxyProcess extends AsyncDisposable {
  port: number;
  /** Bytes per second of each direction from when it resolves; Infinity: unshaped. */
  setRate(bytesPerSecond: number): Promise<void>;
  /** Milliseconds each chunk waits each way (shaped-proxy.ts setDelay). */
  setDelay(oneWayMs: number): Promise<void>;
}

/** A proxy on 127.0.0.1 to targetHost:targetPort in a child process, shaped to `bytesPerSecond` each way. */
export async function startShapedProxyProcess(targetHost: string, targetPort: number, bytesPerSecond: number): Promise<ShapedProxyProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), targetHost, String(targetPort)], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async (): Promise<string> => {
    const line = await lines.next();
    if (line.done) throw new Error(`the shaping proxy exited (${child.exitCode ?? child.signalCode})`);
    return line.value;
  };
  const port = Number(await next());
  const say = async (line: string): Promise<void> => {
    child.stdin!.write(`${line}\n`);
    const ack = await next();
    if (ack !== "ok") throw new Error(`the shaping proxy answered ${ack}`);
  };
  const setRate = (rate: number): Promise<void> => say(rate === Infinity ? "inf" : String(rate));
  await setRate(bytesPerSecond);
  return {
    port,
    setRate,
    setDelay: (ms) => say(`delay ${ms}`),
    async [Symbol.asyncDispose](): Promise<void> {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.stdin!.end();
      await exited;
    },
  };
}

async function main(): Promise<void> {
  const [host, port] = process.argv.slice(2);
  const proxy = await startShapedProxy(host!, Number(port), Infinity);
  process.stdout.write(`${proxy.port}\n`);
  for await (const line of createInterface({ input: process.stdin })) {
    const delay = /^delay (\d+(?:\.\d+)?)$/.exec(line);
    if (delay) {
      proxy.setDelay(Number(delay[1]));
      process.stdout.write("ok\n");
      continue;
    }
    const rate = line === "inf" ? Infinity : Number(line);
    if (!(rate > 0)) {
      process.stdout.write(`bad rate ${line}\n`);
      continue;
    }
    proxy.setRate(rate);
    process.stdout.write("ok\n");
  }
  await proxy[Symbol.asyncDispose]();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
