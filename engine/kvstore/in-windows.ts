/** Runs `fn` over `items`, at most `width` at a time, in order of start (a write's block uploads, a read-ahead's block reads). */
export async function inWindows<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}
