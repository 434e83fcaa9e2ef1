/**
 * Children of a benchmark or a test harness (a kvstore pod, a shaping proxy, an S3 server) die
 * with it: when this process exits for any reason — an error before the harness reached its
 * cleanup included — each child still running is killed, instead of living on with init as its
 * parent and its ports and memory taken. (A Ctrl-C reaches the whole process group anyway.)
 */
import type { ChildProcess } from "node:child_process";

/** Kills `child` (SIGKILL) if it is still running when this process exits; returns it. */
export function diesWithParent<C extends ChildProcess>(child: C): C {
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  process.once("exit", kill);
  child.once("exit", () => process.removeListener("exit", kill));
  return child;
}
