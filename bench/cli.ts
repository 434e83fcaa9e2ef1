/**
 * The benchmarks' command lines, one behaviour for all: `--help` prints the script's own header
 * comment (its usage and what it measures), and an unknown option, a missing value or a value a
 * script refuses is one line naming it and exit status 2, before anything is started.
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { argsErrorMessage } from "../lib/args.ts";

const script = process.argv[1] ?? "bench";
const name = `bench/${basename(script)}`;

/** The comment the script opens with (a /** block or leading // lines), comment marks removed. */
function header(): string {
  let text = "";
  // A bundled copy (the GPU machine's .mjs) starts with some other module's code: sources only.
  if (script.endsWith(".ts")) {
    try {
      text = readFileSync(script, "utf8");
    } catch {
      // Unreadable: the fallback line below.
    }
  }
  const block = /^\s*\/\*\*([\s\S]*?)\*\//.exec(text)?.[1]?.split("\n").map((l) => l.replace(/^\s*\* ?/, ""));
  const slashes = /^(\s*\/\/[^\n]*\n)+/.exec(text)?.[0].trimEnd().split("\n").map((l) => l.replace(/^\s*\/\/ ?/, ""));
  const lines = block ?? slashes;
  if (!lines) return `${name}: no usage text found; see the comment at the top of its source\n`;
  return `${lines.join("\n").trim()}\n`;
}

/** Refuses the command line: one line on stderr, exit 2. */
export function usageError(message: string): never {
  process.stderr.write(`${name}: ${message} (--help prints the usage)\n`);
  process.exit(2);
}

/** parseArgs for a benchmark's command line (strict, as parseArgs is by default), with --help and one-line refusals. */
export function benchArgs<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  const argv = config.args ?? process.argv.slice(2);
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(header());
    process.exit(0);
  }
  try {
    return parseArgs(config);
  } catch (err) {
    return usageError(argsErrorMessage(err as Error));
  }
}

/** A benchmark that takes no options (its settings, where any, come from the environment, as its header says): --help, and a refusal of anything else. */
export function noOptions(): void {
  benchArgs({ options: {} });
}

/** A comma-separated list of positive integers (`--sizes 1024,8192`), or a usage error naming the option. */
export function intList(option: string, value: string): number[] {
  const out = value.split(",").map((s) => Number(s.trim()));
  if (out.length === 0 || out.some((n) => !Number.isSafeInteger(n) || n <= 0)) usageError(`--${option} takes positive integers separated by commas, not ${JSON.stringify(value)}`);
  return out;
}
