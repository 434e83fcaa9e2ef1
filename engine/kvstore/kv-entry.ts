/**
 * A stored KV entry: one llama.cpp sequence state (encoded by a codec) for a block-aligned
 * prompt prefix, with a SHA-256 over everything before it so that every tier and every
 * reader can reject a corrupt or truncated copy.
 *
 *   "LFKE" | version u32 | header length u32 | header JSON | payload | sha256 (32 bytes)
 */
import { createHash } from "node:crypto";
import { decodeManifest, isManifest, KvBlockError } from "./kv-blocks.ts";

const MAGIC = Buffer.from("LFKE");
const VERSION = 1;

export interface KvEntryHeader {
  /** Model identity the keys are salted with (kv identity, not the display name). */
  model: string;
  /** Prompt tokens the state holds (block-aligned). */
  tokens: number;
  /** Codec of the payload (kvcodec/codec.ts). */
  codec: string;
  /** Bytes of the decoded llama.cpp state. */
  stateBytes: number;
  /**
   * Keys of every block prefix of the entry (prefixKeys[i] names its first i+1 blocks; the last
   * is the entry's own key). The store indexes them as aliases, so a prompt sharing only the
   * first k blocks is served this entry, cut to k blocks by the client. Absent in older entries.
   */
  prefixKeys?: string[];
  /** How the payload is encrypted (kv-seal.ts: "aes-256-gcm"); absent: plaintext. */
  encryption?: string;
}

export class KvEntryError extends Error {}

export function encodeKvEntry(header: KvEntryHeader, payload: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const head = Buffer.alloc(12);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(VERSION, 4);
  head.writeUInt32LE(json.length, 8);
  const hash = createHash("sha256").update(head).update(json).update(payload).digest();
  return Buffer.concat([head, json, payload, hash]);
}

/** Throws KvEntryError unless the buffer is a whole entry whose checksum matches. */
export function verifyKvEntry(buf: Buffer): void {
  if (buf.length < 44 || !buf.subarray(0, 4).equals(MAGIC)) throw new KvEntryError("not a KV entry (bad magic or too short)");
  const digest = createHash("sha256")
    .update(buf.subarray(0, buf.length - 32))
    .digest();
  if (!digest.equals(buf.subarray(buf.length - 32))) throw new KvEntryError("KV entry checksum mismatch");
}

/** Bytes of the fixed head before the header JSON, and the header JSON's length (from those bytes). */
export const KV_ENTRY_HEAD_BYTES = 12;
export const kvEntryHeaderLength = (head: Buffer): number => head.readUInt32LE(8);

/**
 * The header alone, from the start of an entry (at least KV_ENTRY_HEAD_BYTES + header length
 * bytes); no checksum check, so only for indexing (the store's aliases), never for serving.
 */
export function readKvEntryHeader(buf: Buffer): KvEntryHeader {
  if (buf.length < KV_ENTRY_HEAD_BYTES || !buf.subarray(0, 4).equals(MAGIC)) throw new KvEntryError("not a KV entry (bad magic or too short)");
  if (buf.readUInt32LE(4) !== VERSION) throw new KvEntryError(`KV entry version ${buf.readUInt32LE(4)} not supported`);
  const end = KV_ENTRY_HEAD_BYTES + kvEntryHeaderLength(buf);
  if (buf.length < end) throw new KvEntryError("KV entry header truncated");
  try {
    return JSON.parse(buf.subarray(KV_ENTRY_HEAD_BYTES, end).toString()) as KvEntryHeader;
  } catch (err) {
    throw new KvEntryError(`KV entry header is not JSON: ${(err as Error).message}`);
  }
}

export function decodeKvEntry(buf: Buffer): { header: KvEntryHeader; payload: Buffer } {
  verifyKvEntry(buf);
  const header = readKvEntryHeader(buf);
  return { header, payload: buf.subarray(KV_ENTRY_HEAD_BYTES + kvEntryHeaderLength(buf), buf.length - 32) };
}

export function isValidKvEntry(buf: Buffer): boolean {
  try {
    verifyKvEntry(buf);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether a tier may keep and serve a stored value: a v1 entry whose SHA-256 matches, a v2
 * manifest whose CRC-32C matches, or a v2 block (raw bytes: its size and CRC-32C are in the
 * manifests that name it, and every reader checks them before using it).
 */
export function isValidStoredValue(buf: Buffer): boolean {
  if (buf.length >= 4 && buf.subarray(0, 4).equals(MAGIC)) return isValidKvEntry(buf);
  if (isManifest(buf)) {
    try {
      decodeManifest(buf);
      return true;
    } catch (err) {
      if (err instanceof KvBlockError) return false;
      throw err;
    }
  }
  return true;
}

/** The header of a v1 entry or of a v2 manifest (what the store's aliases index). */
export function readStoredHeader(buf: Buffer): Pick<KvEntryHeader, "tokens" | "prefixKeys"> {
  if (!isManifest(buf)) return readKvEntryHeader(buf);
  try {
    const m = decodeManifest(buf);
    return { tokens: m.tokens, prefixKeys: m.prefixKeys };
  } catch (err) {
    throw new KvEntryError((err as Error).message);
  }
}
