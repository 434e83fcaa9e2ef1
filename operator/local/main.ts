// `npm start`: the fleet of examples/quickstart.yaml (or the file given) on this machine, with no
// cluster: the operator's planners decide the processes, a local driver runs them on loopback,
// and the router serves the OpenAI API on http://127.0.0.1:$PORT (default 8080).
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import { ensureModel } from "../../engine/model/fetch.ts";
import { readFleet } from "./manifests.ts";
import { planLocalFleet, processSpecs } from "./fleet.ts";
import { startEngine, stopEngines, waitHealthy, type RunningEngine } from "./processes.ts";

const log = (msg: string): void => console.log(`${new Date().toISOString().slice(11, 19)} ${msg}`);

async function main(): Promise<void> {
  const file = resolve(process.argv[2] ?? "examples/quickstart.yaml");
  const port = Number(process.env.PORT ?? 8080);
  const fleet = readFleet(file);
  log(`fleet from ${file}: ${fleet.models.length} model(s), ${fleet.prefillPools.length} prefill and ${fleet.decodePools.length} decode pool(s)`);
  for (const m of fleet.models) {
    log(`model ${m.metadata?.name}: ${m.spec.source.uri}`);
    log(`  cached at ${await ensureModel(m.spec.source.uri)}`);
  }
  const planned = planLocalFleet(fleet);
  const modelProcesses = planned.filter((d) => d.role !== "router" && d.role !== "kvstore").reduce((n, d) => n + d.replicas, 0);
  const threads = Math.max(1, Math.floor(availableParallelism() / Math.max(1, modelProcesses)));
  const specs = processSpecs(planned, { routerPort: port, basePort: port + 10_000 > 65_000 ? 18_000 : port + 10_000, threads });
  const engines: RunningEngine[] = [];
  let stopping = false;
  const shutdown = async (): Promise<void> => {
    stopping = true;
    log("stopping the fleet");
    await stopEngines(engines);
    process.exit(0);
  };
  process.once("SIGINT", () => void shutdown());
  process.once("SIGTERM", () => void shutdown());
  for (const group of [specs.filter((s) => !s.args.includes("router")), specs.filter((s) => s.args.includes("router"))]) {
    const started = group.map((s) => startEngine(s, log));
    engines.push(...started);
    for (const e of started) log(`started ${e.spec.name}#${e.spec.replica} on ${e.url}: engine ${e.spec.args.join(" ")}`);
    await Promise.all(started.map((e) => waitHealthy(e, 300_000)));
  }
  log(`fleet ready: OpenAI API on http://127.0.0.1:${port}/v1 (Ctrl-C stops it)`);
  log(
    `  curl http://127.0.0.1:${port}/v1/completions -H 'content-type: application/json' -d '{"model":"default","prompt":"The capital of France is the city of","max_tokens":16}'`,
  );
  for (const e of engines) e.child.once("exit", (code) => stopping || log(`${e.spec.name}#${e.spec.replica} exited (${code}); the fleet is degraded`));
}

main().catch((err: unknown) => {
  console.error(`npm start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
