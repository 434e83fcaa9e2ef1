/**
 * Temporary directories for tests and harnesses that are removed when the process exits, so a
 * test run leaves nothing under /tmp (a CI machine's runs would otherwise pile them up: hundreds
 * of kubeconfigs, token mounts and Prometheus data directories a day).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made: string[] = [];

function removeAll(): void {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** A new directory `<tmpdir>/<prefix>XXXXXX`, removed with everything in it when this process exits. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (made.length === 0) process.once("exit", removeAll);
  made.push(dir);
  return dir;
}
