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
  /**
   * Prompt tokens the prefill pod reused instead of computing (its prefix cache or KV store): the
   * decode pod reports them as the answer's usage.prompt_tokens_details.cached_tokens. Absent from
   * older prefill pods (0).
   */
  cachedTokens?: number;
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
  // Frame header and chunk go out as two pieces: the chunk is a view of the state, never copied.
  for (let off = 0; off < state.length; off += chunkBytes) {
    const chunk = state.subarray(off, Math.min(state.length, off + chunkBytes));
    const frame = Buffer.alloc(8);
    frame.writeUInt32LE(chunk.length, 0);
    frame.writeUInt32LE(crc32(chunk), 4);
    yield frame;
    yield chunk;
  }
  yield Buffer.alloc(4);
}

/**
 * Reads exact lengths from any async source of byte pieces, copying each byte once: small reads
 * (frame headers) into a fresh buffer, chunk payloads straight into their place in the state.
 */
class ByteReader {
  private readonly pieces: Buffer[] = [];
  private head = 0; // offset into pieces[0]
  private length = 0;
  private readonly iterator: AsyncIterator<Buffer | Uint8Array | string>;

  constructor(source: AsyncIterable<Buffer | Uint8Array | string>) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<void> {
    while (this.length < n) {
      const next = await this.iterator.next();
      if (next.done) throw new KvWireError(`KV stream ended early (wanted ${n} more bytes, have ${this.length})`);
      const v = next.value;
      const piece = typeof v === "string" ? Buffer.from(v) : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      this.pieces.push(piece);
      this.length += piece.length;
    }
  }

  /** Copies the next n bytes into target at `at` (n may exceed what is buffered: it is read as it comes). */
  async readInto(target: Buffer, at: number, n: number): Promise<void> {
    let done = 0;
    while (done < n) {
      await this.fill(1);
      const piece = this.pieces[0]!;
      const take = Math.min(n - done, piece.length - this.head);
      piece.copy(target, at + done, this.head, this.head + take);
      done += take;
      this.head += take;
      this.length -= take;
      if (this.head === piece.length) {
        this.pieces.shift();
        this.head = 0;
      }
    }
  }

  async read(n: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(n);
    await this.readInto(out, 0, n);
    return out;
  }
}

async function readHeader(r: ByteReader): Promise<KvHandoffHeader> {
  const head = await r.read(9);
  if (!head.subarray(0, 4).equals(MAGIC) || head.readUInt8(4) !== VERSION) throw new KvWireError("not an LFKV v1 stream");
  const header = JSON.parse((await r.read(head.readUInt32LE(5))).toString("utf8")) as KvHandoffHeader;
  if (!Number.isSafeInteger(header.stateBytes) || header.stateBytes < 0) throw new KvWireError(`KV header has no valid stateBytes (${String(header.stateBytes)})`);
  return header;
}

export async function decodeKvHandoff(source: AsyncIterable<Buffer | Uint8Array | string>): Promise<{ header: KvHandoffHeader; state: Buffer }> {
  const r = new ByteReader(source);
  const header = await readHeader(r);
  // The state is written in place as chunks arrive, and hashed as it goes.
  const state = Buffer.allocUnsafe(header.stateBytes);
  const sha = createHash("sha256");
  let received = 0;
  for (;;) {
    const len = (await r.read(4)).readUInt32LE(0);
    if (len === 0) break;
    const crc = (await r.read(4)).readUInt32LE(0);
    if (received + len > header.stateBytes) throw new KvWireError("KV stream longer than its header says");
    await r.readInto(state, received, len);
    const chunk = state.subarray(received, received + len);
    if (crc32(chunk) !== crc) throw new KvWireError(`KV chunk at byte ${received} failed its CRC-32 check`);
    sha.update(chunk);
    received += len;
  }
  if (received !== header.stateBytes) throw new KvWireError(`KV stream has ${received} bytes, header says ${header.stateBytes}`);
  if (sha.digest("hex") !== header.sha256) throw new KvWireError("KV state failed its SHA-256 check");
  return { header, state };
}

/** The frames as they are, their bytes added to `count` as each is taken (what a sender got written). */
export function* countingBytes(frames: Iterable<Buffer>, count: { bytes: number }): Generator<Buffer> {
  for (const f of frames) {
    yield f;
    count.bytes += f.length;
  }
}
