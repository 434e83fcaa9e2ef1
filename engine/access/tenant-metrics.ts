/**
 * Per-tenant metrics. The tenant label takes only configured tenant names (the router sets it
 * after authentication; "" for open mode and for refused keys), so its cardinality is the number
 * of tenants, never what clients send.
 */
import { Counter, Gauge, type Registry } from "prom-client";

export interface TenantMetrics {
  requests: Counter<"tenant" | "status">;
  tokens: Counter<"tenant" | "kind">;
  rejected: Counter<"tenant" | "reason">;
  /** 1 when the router serves without API keys. */
  open: Gauge;
}

export function createTenantMetrics(registry: Registry): TenantMetrics {
  const registers = [registry];
  return {
    requests: new Counter({ name: "llmfleet_tenant_requests_total", help: "Requests by tenant and HTTP status", labelNames: ["tenant", "status"], registers }),
    tokens: new Counter({ name: "llmfleet_tenant_tokens_total", help: "Tokens by tenant, prompt or completion, as counted against its limit", labelNames: ["tenant", "kind"], registers }),
    rejected: new Counter({
      name: "llmfleet_tenant_rejected_total",
      help: "Requests refused by the router: invalid_api_key (401) or the limit hit (429)",
      labelNames: ["tenant", "reason"],
      registers,
    }),
    open: new Gauge({ name: "llmfleet_access_open", help: "1 when the router serves anyone without an API key (open mode)", registers }),
  };
}

/** Engine pods: prompt tokens served from a KV cache, by tenant (the autoscaler's counters stay unlabelled). */
export function createTenantCacheMetric(registry: Registry): Counter<"tenant"> {
  return new Counter({
    name: "llmfleet_tenant_prefix_hit_tokens_total",
    help: "Prompt tokens whose KV was reused instead of recomputed, by tenant",
    labelNames: ["tenant"],
    registers: [registry],
  });
}
