// Locates (building on first use) the Pulumi CLI via build.sh, as scripts/cluster/bins.ts does for
// the control plane: build.sh prints progress on stderr and, last, the install root on stdout
// (`pulumi` in its bin/); once built it only prints the root, so calling it on every start is cheap.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { runBuildScript } from "../build-script.ts";

const SCRIPT = join(import.meta.dirname, "build.sh");

export async function ensurePulumi(): Promise<string> {
  const root = await runBuildScript(SCRIPT);
  if (!existsSync(join(root, "bin", "pulumi"))) throw new Error(`scripts/pulumi/build.sh: ${root}/bin lacks pulumi`);
  return root;
}
