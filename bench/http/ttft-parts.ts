/**
 * Where a first token's time goes, from the pods' own metrics around a run (bench:http's pd and
 * pd2gpu sections): per request, mean ms. Through the router (P/D): the router's TTFT (its arrival
 * to the first token relayed), the prefill call as the router saw it, the prefill engine's native
 * prefill time, and the decode pod's TTFT (the generate call's arrival to its first token out);
 * `router_rest` (the router's own work and the generate call's hop) and `prefill_rest` (the prefill
 * pod's HTTP, tokenising, lease and sampling) are what is left of each. Aggregated: the pod's TTFT
 * and its native prefill time. The client's TTFT adds its own hop to the first.
 */
export type PodRole = "router" | "prefill" | "decode" | "aggregated";
export type Pods = Partial<Record<PodRole, string>>;

interface Part {
  pod: PodRole;
  /** A histogram's name (its _sum and _count are read), or a counter's (`perRequest`: divided by the run's requests). */
  name: string;
  labels?: Record<string, string>;
  perRequest?: boolean;
}

const PARTS: Record<string, Part> = {
  router_ttft: { pod: "router", name: "llmfleet_ttft_seconds" },
  router_prefill_call: { pod: "router", name: "llmfleet_kv_handoff_seconds", labels: { stage: "prefill_and_handoff" } },
  prefill_native: { pod: "prefill", name: "llmfleet_engine_native_prefill_seconds_total", perRequest: true },
  decode_ttft: { pod: "decode", name: "llmfleet_ttft_seconds" },
  pod_ttft: { pod: "aggregated", name: "llmfleet_ttft_seconds" },
  pod_native_prefill: { pod: "aggregated", name: "llmfleet_engine_native_prefill_seconds_total", perRequest: true },
};

export type PartsSnapshot = Record<string, { sum: number; count: number }>;

/** The sum of a metric's samples in a /metrics text whose labels include `labels`. */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.split(" ").pop());
  }
  return sum;
}

/** The parts' sums and counts on the pods given (a pod not given: its parts are left out). */
export async function partsSnapshot(pods: Pods): Promise<PartsSnapshot> {
  const texts: Partial<Record<PodRole, string>> = {};
  await Promise.all(
    (Object.entries(pods) as [PodRole, string][]).map(async ([role, url]) => {
      texts[role] = await fetch(`${url}/metrics`).then((r) => r.text(), () => "");
    }),
  );
  const out: PartsSnapshot = {};
  for (const [key, p] of Object.entries(PARTS)) {
    const text = texts[p.pod];
    if (text === undefined) continue;
    out[key] = p.perRequest ? { sum: metricSum(text, p.name, p.labels), count: 0 } : { sum: metricSum(text, `${p.name}_sum`, p.labels), count: metricSum(text, `${p.name}_count`, p.labels) };
  }
  return out;
}

const ms = (s: number, n: number): number => Math.round((s / n) * 1e4) / 10;

/** Mean ms per request of each part between two snapshots of a run of `requests` requests, and what is left of the router's and the prefill call's. */
export function partsMeans(a: PartsSnapshot, b: PartsSnapshot, requests: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, after] of Object.entries(b)) {
    const before = a[key] ?? { sum: 0, count: 0 };
    const n = PARTS[key]!.perRequest ? requests : after.count - before.count;
    if (n > 0) out[key] = ms(after.sum - before.sum, n);
  }
  if (out.router_ttft !== undefined && out.router_prefill_call !== undefined && out.decode_ttft !== undefined) {
    out.router_rest = Math.round((out.router_ttft - out.router_prefill_call - out.decode_ttft) * 10) / 10;
  }
  if (out.router_prefill_call !== undefined && out.prefill_native !== undefined) out.prefill_rest = Math.round((out.router_prefill_call - out.prefill_native) * 10) / 10;
  return out;
}
