/**
 * KV keys: chained SHA-256 over fixed-size token blocks. The chain starts from a salt that binds
 * the model identity and the tenant, so a key names "this exact token prefix, on this model, for
 * this tenant" and one tenant's cache can never answer another's:
 *
 *   h0 = sha256("llmfleet-kv/v1" | model identity | tenant salt)
 *   h(i+1) = sha256(h(i) | tokens of block i as u32 LE)      key of the prefix of i+1 blocks
 */
import { createHash } from "node:crypto";

export interface KeySalt {
  /** e.g. "sha256:<hex>" of the GGUF, or "<file name>:<bytes>" when no checksum is known. */
  model: string;
  tenant: string;
}

/**
 * The salt of one request's keys: the store's tenant salt (--tenant-salt, an extra per store) and
 * the request's KV namespace (its tenant, or the shared namespace it opted into). An empty
 * namespace (open mode) keeps the keys a store without tenants always had.
 */
export function requestSalt(model: string, storeSalt: string, kvNamespace: string): KeySalt {
  return { model, tenant: kvNamespace === "" ? storeSalt : `${storeSalt}\0${kvNamespace}` };
}

export function chainSeed(salt: KeySalt): Buffer {
  return createHash("sha256").update(`llmfleet-kv/v1\0${salt.model}\0${salt.tenant}`).digest();
}

/** Keys of every full block prefix of `tokens`: result[i] names tokens[0 .. (i+1)*blockTokens). */
export function kvBlockHashes(tokens: readonly number[], blockTokens: number, salt: KeySalt): string[] {
  const keys: string[] = [];
  let prev = chainSeed(salt);
  const block = Buffer.alloc(blockTokens * 4);
  for (let b = 0; (b + 1) * blockTokens <= tokens.length; b++) {
    for (let j = 0; j < blockTokens; j++) block.writeUInt32LE(tokens[b * blockTokens + j]!, j * 4);
    prev = createHash("sha256").update(prev).update(block).digest();
    keys.push(prev.toString("hex"));
  }
  return keys;
}
