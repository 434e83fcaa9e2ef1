// Detached child processes with pid files and log files in the cluster state dir.
// Invariant: a component is named after its binary (etcd, kube-apiserver, ...), its pid lives in
// <dir>/pids/<name>.pid and its output in <dir>/logs/<name>.log. We only ever signal a pid whose
// command line still names that binary, so a recycled pid of an unrelated process is never killed.
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePorts } from "../../operator/local/ports.ts";

export { freePorts };

export function logPath(dir: string, name: string): string {
  return join(dir, "logs", `${name}.log`);
}

function pidPath(dir: string, name: string): string {
  return join(dir, "pids", `${name}.pid`);
}

/** Starts `bin args` in its own process group, detached from us, output appended to its log. */
export function spawnDetached(dir: string, bin: string, args: string[]): number {
  const name = basename(bin);
  mkdirSync(join(dir, "logs"), { recursive: true });
  mkdirSync(join(dir, "pids"), { recursive: true });
  const out = openSync(logPath(dir, name), "a");
  try {
    const child = spawn(bin, args, { detached: true, stdio: ["ignore", out, out], cwd: dir });
    if (child.pid === undefined) throw new Error(`failed to start ${bin}`);
    child.unref();
    writeFileSync(pidPath(dir, name), `${child.pid}\n`);
    return child.pid;
  } finally {
    closeSync(out);
  }
}

/** Pids recorded in the state dir, by component name. */
export function readPids(dir: string): Map<string, number> {
  const pids = new Map<string, number>();
  const pidDir = join(dir, "pids");
  if (!existsSync(pidDir)) return pids;
  for (const file of readdirSync(pidDir).filter((f) => f.endsWith(".pid"))) {
    const pid = Number.parseInt(readFileSync(join(pidDir, file), "utf8"), 10);
    if (Number.isInteger(pid) && pid > 0) pids.set(file.slice(0, -4), pid);
  }
  return pids;
}

/** True when `pid` is alive and (where /proc exists) is still running the binary `name`. */
export function isAlive(pid: number, name: string): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const cmdline = `/proc/${pid}/cmdline`;
  if (!existsSync("/proc/self")) return true;
  try {
    const argv0 = readFileSync(cmdline, "utf8").split("\0")[0] ?? "";
    return basename(argv0) === name;
  } catch {
    return false; // exited between the two checks
  }
}

/** SIGTERM, wait up to graceMs for a clean exit, then SIGKILL. */
export async function stopProcess(pid: number, name: string, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid, name)) return;
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid, name)) return;
    await sleep(100);
  }
  if (isAlive(pid, name)) process.kill(pid, "SIGKILL");
}

/**
 * Stops every recorded component of the state dir, in `order` first (dependents before what
 * they depend on), then any other pid file. Removes the pid files of stopped processes.
 */
export async function stopAll(dir: string, order: readonly string[]): Promise<void> {
  const pids = readPids(dir);
  const names = [...order.filter((n) => pids.has(n)), ...[...pids.keys()].filter((n) => !order.includes(n))];
  for (const name of names) {
    await stopProcess(pids.get(name) ?? 0, name);
    rmSync(pidPath(dir, name), { force: true });
  }
}

/** The last `lines` lines of a component's log, for error messages. */
export function tailLog(dir: string, name: string, lines = 40): string {
  try {
    const text = readFileSync(logPath(dir, name), "utf8").trimEnd().split("\n");
    return text.slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/**
 * Asks the kernel for `count` distinct free loopback ports. All listeners are held open until
 * every port is known so the same port is never handed out twice.
 */
