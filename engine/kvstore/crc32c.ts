/**
 * CRC-32C (Castagnoli), the checksum of every stored block of a v2 KV entry (kv-blocks.ts) and of
 * every chunk of the native TCP stream (engine/native/src/kv-stream.cpp, which computes it with
 * SSE 4.2 at several GB/s). Here: the addon's function when a caller has loaded the addon (pods
 * that move blocks over TCP do), else slicing-by-8 in JavaScript (a few hundred MB/s), the same
 * values either way.
 */
const TABLES: Uint32Array[] = (() => {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[0]![n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) t[k]![n] = (t[0]![t[k - 1]![n]! & 0xff]! ^ (t[k - 1]![n]! >>> 8)) >>> 0;
  }
  return t;
})();

let native: ((bytes: Uint8Array) => number) | undefined;
let nativeAsync: ((bytes: Uint8Array) => Promise<number>) | undefined;

/**
 * From this size crc32cAsync computes on a worker thread: below it the hop costs more than the
 * checksum (1 MiB takes ~0.1 ms natively), above it a block's checksum would hold the event loop
 * (a 7B model's 32 MB raw block takes a few ms; a 1 GB entry's blocks, ~100 ms).
 */
const ASYNC_FROM_BYTES = 2 ** 20;

/** Lets crc32c use the addon's implementation (pods and the kvstore call it once the addon is loaded); `async`: the same on a worker thread, for crc32cAsync. */
export function useNativeCrc32c(fn: ((bytes: Uint8Array) => number) | undefined, async?: (bytes: Uint8Array) => Promise<number>): void {
  native = fn;
  nativeAsync = fn ? async : undefined;
}

export function crc32cJs(bytes: Uint8Array): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
  let crc = 0xffffffff;
  let i = 0;
  const n = bytes.length;
  for (; i + 8 <= n; i += 8) {
    const a = (crc ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24))) >>> 0;
    crc =
      t7[a & 0xff]! ^
      t6[(a >>> 8) & 0xff]! ^
      t5[(a >>> 16) & 0xff]! ^
      t4[a >>> 24]! ^
      t3[bytes[i + 4]!]! ^
      t2[bytes[i + 5]!]! ^
      t1[bytes[i + 6]!]! ^
      t0[bytes[i + 7]!]!;
  }
  for (; i < n; i++) crc = t0[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

export function crc32c(bytes: Uint8Array): number {
  return native ? native(bytes) >>> 0 : crc32cJs(bytes);
}

/**
 * crc32c with large inputs checksummed off the event loop where the addon's worker is available
 * (useNativeCrc32c's second argument): a kvstore committing a 1 GB entry's blocks held lookups from
 * every other pod for ~100 ms while it checksummed them (BENCHMARKS.md).
 */
export async function crc32cAsync(bytes: Uint8Array): Promise<number> {
  return nativeAsync && bytes.length >= ASYNC_FROM_BYTES ? (await nativeAsync(bytes)) >>> 0 : crc32c(bytes);
}
