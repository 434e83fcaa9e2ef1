/** `npm run model:fetch [-- URI]`: fetch a model into the cache and print its path. */
import { DEFAULT_MODEL, ensureModel } from "./fetch.ts";

const uri = process.argv[2] ?? DEFAULT_MODEL.uri;
const path = await ensureModel(uri);
process.stdout.write(`${path}\n`);
