/**
 * The servers the HTTP benchmark drives, each started as users start it: the engine's own program
 * (a separate process serving HTTP, as the operator's pod runs it) and llama-server built from the
 * same llama.cpp source. Each is stopped after its section; a server that dies mid-run is reported.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { dirname } from "node:path";

export interface RunningServer extends AsyncDisposable {
  url: string;
  pid: number;
  /** Set when the process has exited (code or signal). */
  exited(): string | undefined;
  /** The last lines the process wrote to stderr/stdout. */
  tail(): string;
  /** SIGTERM, and SIGKILL if it has not exited after `graceMs` (as a pod's termination grace period). */
  stop(graceMs: number): Promise<void>;
}

async function stopChild(child: ChildProcess, exit: () => string | undefined, graceMs: number): Promise<void> {
  if (exit()) return;
  const gone = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await gone;
  clearTimeout(timer);
}

/** A server's log file, its directory made first; a log that cannot be written is said once, and the server and the bench go on without it. */
function openLog(name: string, file: string): WriteStream {
  mkdirSync(dirname(file), { recursive: true });
  const log = createWriteStream(file, { flags: "a" });
  log.on("error", (err) => process.stderr.write(`bench:http: ${name}'s log ${file}: ${err.message}\n`));
  return log;
}

/** Starts `command args`, waits until `readyPath` answers 200 (model loaded), within `timeoutMs`. */
export async function startServer(
  name: string,
  command: string,
  args: string[],
  opts: { port: number; readyPath: string; logFile?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number },
): Promise<RunningServer> {
  const child: ChildProcess = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...opts.env } });
  const log = opts.logFile ? openLog(name, opts.logFile) : undefined;
  let lines: string[] = [];
  let exit: string | undefined;
  const keep = (d: Buffer): void => {
    log?.write(d);
    lines = [...lines, ...d.toString().split("\n")].slice(-40);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  child.on("exit", (code, signal) => (exit = signal ? `killed by ${signal}` : `exited with code ${code}`));
  const url = `http://127.0.0.1:${opts.port}`;
  process.stderr.write(`bench:http: starting ${name}: ${command} ${args.join(" ")}\n`);
  const deadline = Date.now() + (opts.timeoutMs ?? 300_000);
  for (;;) {
    if (exit) throw new Error(`${name} ${exit} before it was ready:\n${lines.join("\n")}`);
    try {
      const res = await fetch(`${url}${opts.readyPath}`);
      if (res.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${name} not ready after ${opts.timeoutMs ?? 300_000} ms:\n${lines.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    url,
    pid: child.pid ?? 0,
    exited: () => exit,
    tail: () => lines.join("\n"),
    stop: (graceMs) => stopChild(child, () => exit, graceMs).then(() => void log?.end()),
    async [Symbol.asyncDispose](): Promise<void> {
      await stopChild(child, () => exit, 10_000);
      log?.end();
    },
  };
}
