// `npm run cluster:down`: stops the components recorded in the state dir (SIGTERM, then
// SIGKILL after a grace period; dependents before etcd) and removes the state dir.
import { existsSync } from "node:fs";
import { defaultClusterDir, stopCluster } from "./cluster.ts";

async function main(): Promise<void> {
  const dir = defaultClusterDir();
  if (!existsSync(dir)) {
    process.stderr.write(`no cluster state in ${dir}\n`);
    return;
  }
  await stopCluster(dir);
  process.stderr.write(`cluster stopped, ${dir} removed\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`cluster:down failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
