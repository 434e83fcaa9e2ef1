/** `npm run engine -- --role aggregated|prefill|decode|router|kvstore [...]`; see engine/README.md. */
import type { Server } from "node:http";
import { HELP, parseEngineOptions } from "./cli/options.ts";
import { createModelPod } from "./pod.ts";
import { createRouterApp } from "./router/router-app.ts";
import { watchUpstreamsFile } from "./router/upstreams-file.ts";
import { createEngineMetrics } from "./metrics/engine-metrics.ts";
import { createKvStorePod } from "./kvstore/kvstore-pod.ts";

async function main(): Promise<void> {
  const options = parseEngineOptions(process.argv.slice(2));
  if (options === "help") {
    process.stdout.write(HELP);
    return;
  }
  let dispose: () => Promise<void> = async () => {};
  let app;
  if (options.role === "router") {
    const { prefill, decode, aggregated, policy, upstreamsFile } = options;
    const upstreams = upstreamsFile ? watchUpstreamsFile(upstreamsFile, { prefill, decode, aggregated }, policy).upstreams : undefined;
    app = createRouterApp({ prefill, decode, aggregated, policy, upstreams, metrics: createEngineMetrics("router", true) });
  } else if (options.role === "kvstore") {
    const pod = await createKvStorePod({ ...options, withProcessMetrics: true });
    app = pod.app;
    dispose = async () => pod[Symbol.asyncDispose]();
  } else {
    const pod = await createModelPod({ ...options, role: options.role, withProcessMetrics: true });
    app = pod.app;
    dispose = async () => pod[Symbol.asyncDispose]();
  }
  const server: Server = app.listen(options.port, options.host, () => {
    process.stderr.write(`llmfleet engine (${options.role}) listening on ${options.host}:${options.port}\n`);
  });
  const shutdown = (): void => {
    server.close();
    server.closeAllConnections();
    dispose().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
}

main().catch((err: unknown) => {
  process.stderr.write(`engine: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
