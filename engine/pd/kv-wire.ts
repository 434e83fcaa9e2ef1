/**
 * The KV hand-off wire format (prefill -> decode), binary and chunked so that a large state
 * streams without one huge buffer, and checksummed per chunk (CRC-32) and whole (SHA-256):
 *   "LFKV" u8 version=1, u32 header length, header JSON (KvHandoffHeader)
 *   chunks: u32 length (> 0), u32 crc32, bytes
 *   end:    u32 0
 * A truncated or corrupted stream is an error, never a silently wrong KV cache.
 */
import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";

const MAGIC = Buffer.from("LFKV");
const VERSION = 1;
export const DEFAULT_CHUNK_BYTES = 1 << 20;

export interface KvHandoffHeader {
  handoffId: string;
  /** Model id of the prefill pod; the decode pod refuses another model's state. */
  model: string;
  /** Prompt tokens whose KV the state holds (prompt minus its last token). */
  tokens: number[];
  /** The V layout the state was written with (informational; the decode side normalises). */
  vTransposed: boolean;
  stateBytes: number;
  sha256: string;
}

export class KvWireError extends Error {}

export function* encodeKvHandoff(header: Omit<KvHandoffHeader, "stateBytes" | "sha256">, state: Buffer, chunkBytes = DEFAULT_CHUNK_BYTES): Generator<Buffer> {
  const full: KvHandoffHeader = { ...header, stateBytes: state.length, sha256: createHash("sha256").update(state).digest("hex") };
  const json = Buffer.from(JSON.stringify(full));
  const head = Buffer.alloc(9);
  MAGIC.copy(head, 0);
  head.writeUInt8(VERSION, 4);
  head.writeUInt32LE(json.length, 5);
  yield Buffer.concat([head, json]);
  for (let off = 0; off < state.length; off += chunkBytes) {
    const chunk = state.subarray(off, Math.min(state.length, off + chunkBytes));
    const frame = Buffer.alloc(8);
    frame.writeUInt32LE(chunk.length, 0);
    frame.writeUInt32LE(crc32(chunk), 4);
    yield Buffer.concat([frame, chunk]);
  }
  yield Buffer.alloc(4);
}

/** Accumulates bytes from any async source and reads exact lengths. */
class ByteQueue {
  private buffered: Buffer[] = [];
  private length = 0;
  private readonly iterator: AsyncIterator<Buffer | Uint8Array | string>;

  constructor(source: AsyncIterable<Buffer | Uint8Array | string>) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  async read(n: number): Promise<Buffer> {
    while (this.length < n) {
      const next = await this.iterator.next();
      if (next.done) throw new KvWireError(`KV stream ended early (wanted ${n} more bytes, have ${this.length})`);
      const chunk = Buffer.from(next.value as Uint8Array);
      this.buffered.push(chunk);
      this.length += chunk.length;
    }
    const all = Buffer.concat(this.buffered);
    this.buffered = [all.subarray(n)];
    this.length = all.length - n;
    return all.subarray(0, n);
  }
}

async function readHeader(q: ByteQueue): Promise<KvHandoffHeader> {
  const head = await q.read(9);
  if (!head.subarray(0, 4).equals(MAGIC) || head.readUInt8(4) !== VERSION) throw new KvWireError("not an LFKV v1 stream");
  return JSON.parse((await q.read(head.readUInt32LE(5))).toString("utf8")) as KvHandoffHeader;
}

export async function decodeKvHandoff(source: AsyncIterable<Buffer | Uint8Array | string>): Promise<{ header: KvHandoffHeader; state: Buffer }> {
  const q = new ByteQueue(source);
  const header = await readHeader(q);
  const chunks: Buffer[] = [];
  let received = 0;
  for (;;) {
    const len = (await q.read(4)).readUInt32LE(0);
    if (len === 0) break;
    const crc = (await q.read(4)).readUInt32LE(0);
    const chunk = Buffer.from(await q.read(len));
    if (crc32(chunk) !== crc) throw new KvWireError(`KV chunk at byte ${received} failed its CRC-32 check`);
    received += len;
    if (received > header.stateBytes) throw new KvWireError("KV stream longer than its header says");
    chunks.push(chunk);
  }
  const state = Buffer.concat(chunks);
  if (state.length !== header.stateBytes) throw new KvWireError(`KV stream has ${state.length} bytes, header says ${header.stateBytes}`);
  if (createHash("sha256").update(state).digest("hex") !== header.sha256) throw new KvWireError("KV state failed its SHA-256 check");
  return { header, state };
}
