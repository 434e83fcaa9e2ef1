/** Runs `fn` over `items`, at most `width` at a time, in order of start (a write's block uploads, a read-ahead's block reads). */
export async function inWindows<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

/** Reads of an entry's blocks in flight at least, at most, and the bytes that sets them between. */
export const READ_WINDOW_MIN = 8;
export const READ_WINDOW_MAX = 32;
export const READ_WINDOW_BYTES = 64 * 2 ** 20;

/**
 * Block reads to keep in flight for blocks of up to `blockBytes`: as many as hold READ_WINDOW_BYTES,
 * from READ_WINDOW_MIN to READ_WINDOW_MAX. Small blocks (a compact entry's ~240 KB) are bound by
 * each read's latency, so more of them overlap; large ones (a 7B model's 32 MB raw blocks) by
 * bandwidth, where more in flight would only hold more memory. An 8K-token compact load from the
 * object-store tier went 200 -> 157 ms with 32 in flight instead of 8 (BENCHMARKS.md).
 */
export function readWindow(blockBytes: number): number {
  return Math.min(READ_WINDOW_MAX, Math.max(READ_WINDOW_MIN, Math.floor(READ_WINDOW_BYTES / Math.max(blockBytes, 1))));
}
