/**
 * `npm run model:fetch [-- URI]`: fetch a model into the cache and print its path.
 * `npm run model:fetch -- --fill URI [--checksum sha256:HEX]`: also write the cache's fill record
 * (engine/model/filled-cache.ts), as a Model's fill Job does — e.g. with LLMFLEET_CACHE=<dir> to
 * build an OCI image of a filled cache for spec.cache.image (docs/images.md).
 */
import { parseArgs } from "node:util";
import { DEFAULT_MODEL, ensureModel } from "./fetch.ts";
import { fillModelCache } from "./filled-cache.ts";

const { values, positionals } = parseArgs({ allowPositionals: true, options: { fill: { type: "boolean" }, checksum: { type: "string" } } });
const uri = positionals[0] ?? DEFAULT_MODEL.uri;
if (values.fill) {
  const r = await fillModelCache(uri, values.checksum);
  process.stdout.write(`${r.file}\n`);
} else {
  process.stdout.write(`${await ensureModel(uri)}\n`);
}
