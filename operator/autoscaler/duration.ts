// Kubernetes-style durations ("500ms", "3m", "1h30m") as seconds, the unit the autoscaler works in.
const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };
const PART = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/g;

/** Seconds in `d`, or `fallback` when `d` is undefined. Throws on a malformed duration (the CRD pattern refuses those). */
export function durationSeconds(d: string | undefined, fallback: number): number {
  if (d === undefined || d === "") return fallback;
  let total = 0;
  let consumed = 0;
  for (const m of d.matchAll(PART)) {
    total += Number(m[1]) * (UNIT_SECONDS[m[2] ?? "s"] ?? 1);
    consumed += m[0].length;
  }
  if (consumed !== d.length) throw new Error(`invalid duration ${JSON.stringify(d)}`);
  return total;
}
