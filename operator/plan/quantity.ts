// Kubernetes quantities to bytes and back, for sizing kvstore memory from its tiers.
const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DECIMAL: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, "": 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };

export function parseQuantity(q: string | number): number {
  if (typeof q === "number") return q;
  const m = /^([+-]?[0-9.]+)([eE][+-]?[0-9]+)?([A-Za-z]*)$/.exec(q.trim());
  if (!m) throw new Error(`invalid quantity ${JSON.stringify(q)}`);
  const base = Number(m[1]) * (m[2] ? 10 ** Number(m[2].slice(1)) : 1);
  const suffix = m[3] ?? "";
  const mult = BINARY[suffix] ?? DECIMAL[suffix];
  if (mult === undefined) throw new Error(`invalid quantity suffix in ${JSON.stringify(q)}`);
  return base * mult;
}

/** Bytes as a whole number of Mi, rounded up. */
export function formatMi(bytes: number): string {
  return `${Math.ceil(bytes / 2 ** 20)}Mi`;
}
