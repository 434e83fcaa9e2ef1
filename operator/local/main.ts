// `npm start`: the fleet of examples/quickstart.yaml (or the file given) on this machine, with no
// cluster: the operator's planners decide the processes, a local driver runs them on loopback,
// the operator's autoscaler adds and drains processes with the load, and the router serves the
// OpenAI API on http://127.0.0.1:$PORT (default 8080).
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { argsErrorMessage } from "../../lib/args.ts";
import { ensureModel } from "../../engine/model/fetch.ts";
import { parseEngineOptions } from "../../engine/cli/options.ts";
import { durationSeconds } from "../autoscaler/duration.ts";
import { LocalAutoscaler, type LocalAutoscalerOptions } from "./autoscale.ts";
import { LocalFleetDriver } from "./driver.ts";
import { readFleet } from "./manifests.ts";
import { planLocalFleet, processSpecs, type PlannedDeployment } from "./fleet.ts";
import { prepareNativeAddon } from "./processes.ts";
import { withLocalAccess, writeLocalSecrets } from "./access.ts";
import { parseAccess } from "../../engine/access/access-sources.ts";
import { OPEN_MODE_WARNING } from "../../engine/access/router-access.ts";

const USAGE = `usage: npm start -- [FLEET.yaml] [options]

  FLEET.yaml                        llmfleet resources to run (default: examples/quickstart.yaml)
  --autoscale-interval D            time between autoscaler passes (default: 5s)
  --scale-down-stabilization D      a lower recommendation must hold this long before processes are
                                    drained (default: each pool's autoscaling.scaleDownStabilization, 5m)
  --max-processes N                 at most N processes per pool, whatever its replicas.max
                                    (default: the CPU count, at least 2)
  --no-autoscale                    keep every pool at its planned replicas
  --access-file F                   tenants, API keys and limits (YAML or JSON, re-read when it
                                    changes; docs/security.md). Default: none — the fleet is OPEN:
                                    anyone who reaches the port is served, and all share one KV cache
  PORT=N (environment)              the router's port (default: 8080)
`;

const log = (msg: string): void => console.log(`${new Date().toISOString().slice(11, 19)} ${msg}`);

interface StartOptions {
  file: string;
  port: number;
  autoscale: boolean;
  autoscaler: Omit<LocalAutoscalerOptions, "log">;
  accessFile: string | undefined;
}

function positiveInt(flag: string, v: string | undefined, fallback: number): number {
  const n = Number(v ?? fallback);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} must be a positive integer, got ${v}`);
  return n;
}

const START_OPTIONS = {
  "autoscale-interval": { type: "string" },
  "scale-down-stabilization": { type: "string" },
  "max-processes": { type: "string" },
  "no-autoscale": { type: "boolean" },
  "access-file": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;
type StartArgs = ReturnType<typeof parseArgs<{ args: string[]; allowPositionals: true; options: typeof START_OPTIONS }>>;

/** parseArgs, its error one line that says where the options are listed. */
function parseStartArgs(argv: string[]): StartArgs {
  try {
    return parseArgs({ args: argv, allowPositionals: true, options: START_OPTIONS });
  } catch (err) {
    throw new Error(`${argsErrorMessage(err as Error)} (npm start -- --help lists the options)`, { cause: err });
  }
}

function startOptions(argv: string[]): StartOptions | "help" {
  const { values: v, positionals } = parseStartArgs(argv);
  if (v.help) return "help";
  const stabilisation = v["scale-down-stabilization"];
  return {
    file: resolve(positionals[0] ?? "examples/quickstart.yaml"),
    port: Number(process.env.PORT ?? 8080),
    autoscale: !v["no-autoscale"],
    accessFile: v["access-file"] === undefined ? undefined : resolve(v["access-file"]),
    autoscaler: {
      intervalSeconds: durationSeconds(v["autoscale-interval"], 5),
      maxProcessesPerPool: positiveInt("max-processes", v["max-processes"], Math.max(2, availableParallelism())),
      ...(stabilisation === undefined ? {} : { scaleDownStabilizationSeconds: durationSeconds(stabilisation, 300) }),
    },
  };
}

async function main(): Promise<void> {
  const opts = startOptions(process.argv.slice(2));
  if (opts === "help") return void process.stdout.write(USAGE);
  const { file, port } = opts;
  const fleet = readFleet(file);
  log(`fleet from ${file}: ${fleet.models.length} model(s), ${fleet.prefillPools.length} prefill and ${fleet.decodePools.length} decode pool(s)`);
  for (const m of fleet.models) {
    log(`model ${m.metadata?.name}: ${m.spec.source.uri}`);
    log(`  cached at ${await ensureModel(m.spec.source.uri)}`);
  }
  const runDir = mkdtempSync(join(tmpdir(), "llmfleet-start-"));
  if (opts.accessFile) parseAccess(readFileSync(opts.accessFile, "utf8")); // a bad file fails here, before anything starts
  const planned = withLocalAccess(planLocalFleet(fleet), writeLocalSecrets(runDir), opts.accessFile);
  // Built here, once, before the processes start: they would otherwise all wait on the first one's
  // build, and it would count as their startup time (which the autoscaler plans with).
  if (planned.some(runsNativeBackend)) await prepareNativeAddon(log);
  const modelProcesses = planned.filter((d) => d.role !== "router" && d.role !== "kvstore").reduce((n, d) => n + d.replicas, 0);
  const threads = Math.max(1, Math.floor(availableParallelism() / Math.max(1, modelProcesses)));
  const specs = processSpecs(planned, { routerPort: port, basePort: port + 10_000 > 65_000 ? 18_000 : port + 10_000, threads });
  const driver = new LocalFleetDriver(planned, specs, { threads, runDir, log });
  const autoscaler = new LocalAutoscaler(fleet, driver, { ...opts.autoscaler, log });
  let stopping: Promise<never> | undefined;
  // Ctrl-C while processes start also fails the start: the first reason to stop wins.
  const shutdown = (code: number): Promise<never> =>
    (stopping ??= (async (): Promise<never> => {
      log("stopping the fleet");
      autoscaler.stop();
      await driver.stop();
      rmSync(runDir, { recursive: true, force: true });
      process.exit(code);
    })());
  process.once("SIGINT", () => void shutdown(0));
  process.once("SIGTERM", () => void shutdown(0));
  await driver.start().catch(async (err: unknown) => {
    if (!stopping) console.error(`npm start: ${err instanceof Error ? err.message : String(err)}`);
    await shutdown(1);
  });
  log(`fleet ready: OpenAI API on http://127.0.0.1:${port}/v1 (Ctrl-C stops it)`);
  const auth = opts.accessFile ? ` -H "Authorization: Bearer $KEY"` : "";
  log(
    `  curl http://127.0.0.1:${port}/v1/completions${auth} -H 'content-type: application/json' -d '{"model":"default","prompt":"The capital of France is the city of","max_tokens":16}'`,
  );
  if (opts.accessFile) log(`access: API keys required (tenants from ${opts.accessFile}, re-read when it changes)`);
  else log(`\n${OPEN_MODE_WARNING}\n  (pass --access-file F to require API keys; docs/security.md)`);
  if (!opts.autoscale) return log("autoscaling off (--no-autoscale): every pool stays at its planned processes");
  autoscaler.start();
  log(
    `autoscaling every ${opts.autoscaler.intervalSeconds} s with the operator's SLO autoscaler, at most ${opts.autoscaler.maxProcessesPerPool} processes per pool; scale-down waits ${stabilisationText(opts)}`,
  );
}

/** A model process's backend is the engine's default unless its arguments (a Model's extraArgs) pick another. */
function runsNativeBackend(d: PlannedDeployment): boolean {
  if (d.role === "router" || d.role === "kvstore") return false;
  const options = parseEngineOptions(d.args);
  return options !== "help" && options.backend === "native";
}

function stabilisationText(opts: StartOptions): string {
  const s = opts.autoscaler.scaleDownStabilizationSeconds;
  return s === undefined ? "each pool's scaleDownStabilization (5m unless set)" : `${s} s (--scale-down-stabilization)`;
}

main().catch((err: unknown) => {
  console.error(`npm start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
