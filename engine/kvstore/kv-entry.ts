/**
 * A stored KV entry: one llama.cpp sequence state (encoded by a codec) for a block-aligned
 * prompt prefix, with a SHA-256 over everything before it so that every tier and every
 * reader can reject a corrupt or truncated copy.
 *
 *   "LFKE" | version u32 | header length u32 | header JSON | payload | sha256 (32 bytes)
 */
import { createHash } from "node:crypto";

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

export function decodeKvEntry(buf: Buffer): { header: KvEntryHeader; payload: Buffer } {
  verifyKvEntry(buf);
  if (buf.readUInt32LE(4) !== VERSION) throw new KvEntryError(`KV entry version ${buf.readUInt32LE(4)} not supported`);
  const jsonLength = buf.readUInt32LE(8);
  const header = JSON.parse(buf.subarray(12, 12 + jsonLength).toString()) as KvEntryHeader;
  return { header, payload: buf.subarray(12 + jsonLength, buf.length - 32) };
}

export function isValidKvEntry(buf: Buffer): boolean {
  try {
    verifyKvEntry(buf);
    return true;
  } catch {
    return false;
  }
}
