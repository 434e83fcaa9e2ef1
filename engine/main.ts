/** `npm run engine -- --role aggregated|prefill|decode|router|kvstore [...]`; see engine/README.md. */
import type { RequestListener } from "node:http";
import { applyHostPoolDefault } from "./memory.ts";
import { HELP, parseEngineOptions, type EngineOptions } from "./cli/options.ts";
import { createModelPod } from "./pod.ts";
import { fillModelCache, waitForFilledModel } from "./model/filled-cache.ts";
import { createRouterApp } from "./router/router-app.ts";
import { watchUpstreamsFile } from "./router/upstreams-file.ts";
import { RouterUpstreams } from "./router/upstreams.ts";
import { discoverEndpoints, serviceOf } from "./router/endpoint-slices.ts";
import { KubeClient } from "../lib/kube/client.ts";
import { createEngineMetrics } from "./metrics/engine-metrics.ts";
import { createKvStorePod } from "./kvstore-pod.ts";
import { drainingServer } from "./http/drain.ts";
import { createRouterAccess } from "./access/router-access.ts";

function kubeClientForDiscovery(): KubeClient {
  try {
    return KubeClient.fromDefault();
  } catch (err) {
    throw new Error(`--discover-endpoints needs the Kubernetes API (in-cluster service account or $KUBECONFIG): ${(err as Error).message}`, { cause: err });
  }
}

/** --model-cache fill (a Model's fill Job) and wait (its engine pods' init container): no server, exit 0 when done. */
async function fillOrWait(uri: string, mode: "fill" | "wait", checksum: string | undefined): Promise<void> {
  const log = (line: string): void => void process.stderr.write(`engine: ${line}\n`);
  if (mode === "fill") {
    const r = await fillModelCache(uri, checksum);
    log(`model cache filled: ${uri} is ${r.file} (${r.size} bytes, ${r.checksum})`);
  } else {
    log(`model cache holds ${uri}: ${await waitForFilledModel(uri, { ...(checksum ? { checksum } : {}), log })}`);
  }
}

async function main(): Promise<void> {
  const options = parseEngineOptions(process.argv.slice(2));
  applyHostPoolDefault();
  if (options === "help") {
    process.stdout.write(HELP);
    return;
  }
  if (options.modelCache === "fill" || options.modelCache === "wait") {
    await fillOrWait(options.model, options.modelCache, options.modelChecksum);
    return;
  }
  await serve(options);
}

async function serve(options: EngineOptions): Promise<void> {
  let dispose: () => Promise<void> = async () => {};
  let app;
  if (options.role === "router") {
    const { prefill, decode, aggregated, policy, upstreamsFile } = options;
    let upstreams = upstreamsFile ? watchUpstreamsFile(upstreamsFile, { prefill, decode, aggregated }, policy).upstreams : undefined;
    // Discovery resolves Service URLs; a file of pods, or lists without Service URLs, need none.
    if (options.discoverEndpoints && !upstreamsFile && [...prefill, ...decode, ...aggregated].some((u) => serviceOf(u))) {
      upstreams = new RouterUpstreams({ prefill, decode, aggregated }, policy);
      const log = (line: string): void => void process.stderr.write(`${line}\n`);
      discoverEndpoints(kubeClientForDiscovery(), { prefill, decode, aggregated }, upstreams, { log });
    }
    const metrics = createEngineMetrics("router", true);
    const access = createRouterAccess(options, { registry: metrics.registry, kube: kubeClientForDiscovery, log: (l) => void process.stderr.write(`${l}\n`) });
    app = createRouterApp({ prefill, decode, aggregated, policy, upstreams, maxStreams: options.maxStreams, metrics, guard: access.guard });
  } else if (options.role === "kvstore") {
    const pod = await createKvStorePod({ ...options, withProcessMetrics: true });
    app = pod.app;
    dispose = async () => pod[Symbol.asyncDispose]();
  } else {
    const pod = await createModelPod({ ...options, role: options.role, withProcessMetrics: true });
    app = pod.app;
    dispose = async () => pod[Symbol.asyncDispose]();
  }
  if (options.role !== "router" && !options.fleetTokenFile)
    process.stderr.write(`engine (${options.role}): no --fleet-token-file: this pod serves anyone who reaches it, and believes the tenant they name\n`);
  const http = drainingServer(app as RequestListener, { headersTimeoutMs: options.headersTimeoutSeconds * 1000 });
  // A port already taken (another process, a second replica with hostNetwork) or not ours to bind:
  // one line naming it and exit 1, not an unhandled 'error' event's stack trace.
  http.server.once("error", (err: NodeJS.ErrnoException) => {
    const why = err.code === "EADDRINUSE" ? "the address is already in use" : err.code === "EACCES" ? "permission denied" : err.message;
    process.stderr.write(`llmfleet engine (${options.role}): cannot listen on ${options.host}:${options.port} (--host, --port): ${why}\n`);
    void dispose().finally(() => process.exit(1));
  });
  http.server.listen(options.port, options.host, () => {
    process.stderr.write(`llmfleet engine (${options.role}) listening on ${options.host}:${options.port}\n`);
  });
  let stopping = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (stopping) process.exit(1); // a second signal: stop now
    stopping = true;
    const delayMs = signal === "SIGTERM" ? options.drainDelaySeconds * 1000 : 0;
    process.stderr.write(`engine: ${signal}: draining (${http.inFlight} requests in flight, up to ${options.drainTimeoutSeconds} s)\n`);
    http
      .drain({ delayMs, timeoutMs: options.drainTimeoutSeconds * 1000 })
      .then(({ cut, waitedMs }) => {
        process.stderr.write(`engine: drained in ${waitedMs} ms${cut > 0 ? `; ${cut} requests still running were cut` : ""}\n`);
        return dispose();
      })
      .then(
        () => process.exit(0),
        () => process.exit(1),
      );
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}

main().catch((err: unknown) => {
  process.stderr.write(`engine: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
