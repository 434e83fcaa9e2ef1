// `npm run cluster:up`: starts (or finds) the dev cluster in the state dir and prints
//   KUBECONFIG=<abs path>
//   KUBECTL=<abs path>
// on stdout, nothing else, so `eval "$(npm run -s cluster:up)"` works. Progress goes to stderr.
// The components keep running after this exits; `npm run cluster:down` stops them.
import { defaultClusterDir, findLiveCluster, startCluster, type Cluster } from "./cluster.ts";

async function main(): Promise<void> {
  const dir = defaultClusterDir();
  const t0 = Date.now();
  let cluster: Cluster | undefined = await findLiveCluster(dir);
  if (cluster) {
    process.stderr.write(`cluster already running from ${dir} (${cluster.server}); reusing it\n`);
  } else {
    cluster = await startCluster({ dir, reuse: true });
    process.stderr.write(`cluster up in ${((Date.now() - t0) / 1000).toFixed(1)}s: ${cluster.server}, state in ${dir}\n`);
  }
  process.stdout.write(`KUBECONFIG=${cluster.kubeconfigPath}\nKUBECTL=${cluster.kubectlPath}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`cluster:up failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
