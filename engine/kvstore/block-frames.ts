/**
 * The framing of the KV store's block streams as a loading pod reads them: the newline-delimited
 * JSON of a push's progress (POST /v1/kv/blocks/send), and the frames of GET /v1/kv/:key/stream
 * (manifest frame, then per block u32 length | u32 CRC-32C | bytes; kv-blocks.ts blockFrameHead).
 */
/** Lines of a newline-delimited JSON body, parsed as they arrive. */
export async function* ndjson(body: AsyncIterable<Uint8Array>): AsyncGenerator<unknown> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of body) {
    text += decoder.decode(chunk, { stream: true });
    const lines = text.split("\n");
    text = lines.pop()!;
    for (const line of lines) if (line) yield JSON.parse(line);
  }
}

/** The block stream's frames: skips the leading manifest frame, returns each block's bytes as it completes. */
export class FrameReader {
  private readonly q = new ByteQueue();
  private manifestLeft: number | undefined;
  private want: number | undefined;

  push(chunk: Buffer): Buffer[] {
    this.q.push(chunk);
    const out: Buffer[] = [];
    for (let data = this.frame(); data; data = this.frame()) out.push(data);
    return out;
  }

  private frame(): Buffer | undefined {
    if (this.manifestLeft === undefined) {
      const head = this.q.take(12);
      if (!head) return undefined;
      this.manifestLeft = head.readUInt32LE(8) + 4;
    }
    if (this.manifestLeft > 0) {
      if (!this.q.take(this.manifestLeft)) return undefined;
      this.manifestLeft = 0;
    }
    if (this.want === undefined) {
      const h = this.q.take(8);
      if (!h) return undefined;
      this.want = h.readUInt32LE(0);
    }
    const data = this.q.take(this.want);
    if (data) this.want = undefined;
    return data;
  }
}

/** Bytes arriving in chunks, taken in frames (a copy only when a frame spans chunks). */
class ByteQueue {
  private chunks: Buffer[] = [];
  private size = 0;

  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
  }

  take(n: number): Buffer | undefined {
    if (this.size < n) return undefined;
    this.size -= n;
    const first = this.chunks[0];
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}
