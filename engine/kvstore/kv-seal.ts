/**
 * Encryption of KV entries' payloads in the engine pod, before they leave it: AES-256-GCM with a
 * key per KV namespace (tenant), derived by HKDF-SHA256 from the fleet's master key (a Secret,
 * --kv-encryption-key-file). The store, a copied disk volume or a bucket holds only ciphertext;
 * the entry header stays readable (model identity, token count, codec and block-key hashes —
 * hashes, never tokens) because the store indexes its prefix keys. The additional authenticated
 * data is the entry's key, so a ciphertext moved under another key, or another tenant's entry
 * (another derived key), fails authentication and is recomputed, never imported.
 *
 *   sealed payload = iv (12 bytes) | GCM tag (16 bytes) | ciphertext
 *
 * This is the one place entries are sealed and opened (prefix-cache.ts calls it where it encodes
 * and decodes a v1 entry); the v2 block format (/work/notes/kv-format.md, docs/kv-store.md) calls
 * the same two functions per block, with the block's AAD and `enc.keyId` = the namespace.
 * Rotating the master key makes every sealed entry fail authentication: a miss, recomputed.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";

export const KV_SEAL_ALGORITHM = "aes-256-gcm";
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class KvSealError extends Error {}

export class KvSealer {
  private readonly keys = new Map<string, Buffer>();

  constructor(private readonly master: Buffer) {
    if (master.length < 32) throw new Error("the KV encryption master key must have at least 32 bytes");
  }

  /** The master key in a file (a mounted Secret key): its bytes, trimmed of surrounding whitespace. */
  static fromFile(path: string): KvSealer {
    return new KvSealer(Buffer.from(readFileSync(path, "utf8").trim(), "utf8"));
  }

  private keyFor(kvNamespace: string): Buffer {
    let key = this.keys.get(kvNamespace);
    if (!key) {
      key = Buffer.from(hkdfSync("sha256", this.master, "llmfleet-kv-seal/v1", `namespace:${kvNamespace}`, 32));
      this.keys.set(kvNamespace, key);
    }
    return key;
  }

  /** `aad`: what the ciphertext is bound to (v1: the entry key; v2 blocks: block key | model | kind). */
  seal(kvNamespace: string, aad: string, plain: Buffer): Buffer {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv(KV_SEAL_ALGORITHM, this.keyFor(kvNamespace), iv);
    cipher.setAAD(Buffer.from(aad, "utf8"));
    const body = Buffer.concat([cipher.update(plain), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]);
  }

  /** The plaintext, or KvSealError when the payload was not sealed for this namespace and key. */
  open(kvNamespace: string, aad: string, sealed: Buffer): Buffer {
    if (sealed.length < IV_BYTES + TAG_BYTES) throw new KvSealError("sealed KV payload too short");
    try {
      const decipher = createDecipheriv(KV_SEAL_ALGORITHM, this.keyFor(kvNamespace), sealed.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(aad, "utf8"));
      decipher.setAuthTag(sealed.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([decipher.update(sealed.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
    } catch (err) {
      throw new KvSealError(`KV payload failed authentication (another tenant's, moved, or tampered with): ${(err as Error).message}`);
    }
  }
}
