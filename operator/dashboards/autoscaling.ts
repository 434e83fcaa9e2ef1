// The Grafana autoscaling view, as data: every panel's PromQL lives here, the chart ships the
// JSON generated from it (npm run dashboards:generate), and an integration test runs every
// query against a real Prometheus scraping a running fleet.

export interface PanelQuery {
  expr: string;
  legend: string;
}

export interface Panel {
  title: string;
  description: string;
  unit: string;
  queries: PanelQuery[];
}

export interface Row {
  title: string;
  panels: Panel[];
}

const q = (expr: string, legend: string): PanelQuery => ({ expr, legend });
const p90 = (metric: string, by: string): string => `histogram_quantile(0.9, sum by (le, ${by}) (rate(${metric}_bucket[1m])))`;

export const AUTOSCALING_DASHBOARD: { uid: string; title: string; rows: Row[] } = {
  uid: "llmfleet-autoscaling",
  title: "llmfleet — autoscaling",
  rows: [
    {
      title: "Pools",
      panels: [
        {
          title: "Replicas: desired vs ready",
          description: "Per pool, what the operator runs toward and what is ready.",
          unit: "short",
          queries: [
            q('sum by (namespace, pool, role) (llmfleet_pool_replicas{state="desired"})', "{{pool}} desired"),
            q('sum by (namespace, pool, role) (llmfleet_pool_replicas{state="ready"})', "{{pool}} ready"),
          ],
        },
        {
          title: "TTFT p90 vs SLO",
          description: "Time to first token at the 90th percentile, by engine role, against each Model's ttftP90.",
          unit: "s",
          queries: [
            q(p90("llmfleet_ttft_seconds", "role"), "{{role}} TTFT p90"),
            q('max by (model) (llmfleet_model_slo_seconds{objective="ttft_p90"})', "{{model}} SLO"),
          ],
        },
        {
          title: "Inter-token latency p90 vs SLO",
          description: "Inter-token latency at the 90th percentile, by engine role, against each Model's itlP90.",
          unit: "s",
          queries: [
            q(p90("llmfleet_inter_token_latency_seconds", "role"), "{{role}} ITL p90"),
            q('max by (model) (llmfleet_model_slo_seconds{objective="itl_p90"})', "{{model}} SLO"),
          ],
        },
        {
          title: "Queue depth and running sequences",
          description: "Requests waiting for a sequence and sequences being served, by role.",
          unit: "short",
          queries: [q("sum by (role) (llmfleet_queue_depth)", "{{role}} queued"), q("sum by (role) (llmfleet_running_sequences)", "{{role}} running")],
        },
      ],
    },
    {
      title: "Autoscaler",
      panels: [
        {
          title: "Autoscaler decisions",
          description: "Decisions per pool by direction (up, down, hold); each decision's reason and inputs are in the pool's status.autoscaler.",
          unit: "short",
          queries: [q("sum by (pool, direction) (increase(llmfleet_autoscaler_decisions_total[5m]))", "{{pool}} {{direction}}")],
        },
        {
          title: "Autoscaler inputs: arrival vs forecast",
          description: "Work arriving per second and what the autoscaler expects after the lead time (node provisioning + model load).",
          unit: "short",
          queries: [
            q("sum by (pool) (llmfleet_autoscaler_arrival_rate)", "{{pool}} arrival"),
            q("sum by (pool) (llmfleet_autoscaler_forecast_rate)", "{{pool}} forecast"),
          ],
        },
        {
          title: "Autoscaler: recommended vs current replicas",
          description: "Replicas the autoscaler asked for through /scale, and what was asked before.",
          unit: "short",
          queries: [
            q("sum by (pool) (llmfleet_autoscaler_desired_replicas)", "{{pool}} recommended"),
            q("sum by (pool) (llmfleet_autoscaler_current_replicas)", "{{pool}} before"),
          ],
        },
      ],
    },
    {
      title: "Node groups",
      panels: [
        {
          title: "Nodes: desired, provisioning, ready",
          description: "Per GPUNodeGroup.",
          unit: "short",
          queries: [q("sum by (group, state) (llmfleet_nodegroup_nodes)", "{{group}} {{state}}")],
        },
        {
          title: "GPUs: capacity vs demand",
          description: "Allocatable GPUs of ready nodes and the GPUs the pools placed on the group want.",
          unit: "short",
          queries: [q("sum by (group, kind) (llmfleet_nodegroup_gpus)", "{{group}} {{kind}}")],
        },
      ],
    },
    {
      title: "Traffic and KV",
      panels: [
        {
          title: "Requests by status",
          description: "Requests per second each engine role answered, by HTTP status.",
          unit: "reqps",
          queries: [q("sum by (role, status) (rate(llmfleet_requests_total[1m]))", "{{role}} {{status}}")],
        },
        {
          title: "Router: streams admitted",
          description: "Completions the routers hold at once (llmfleet_router_streams_in_flight); at --max-streams a router answers 429 with Retry-After.",
          unit: "short",
          queries: [q("sum(llmfleet_router_streams_in_flight)", "admitted, all routers")],
        },
        {
          title: "Generated tokens per second",
          description: "Tokens generated per second, by role.",
          unit: "short",
          queries: [q("sum by (role) (rate(llmfleet_generated_tokens_total[1m]))", "{{role}}")],
        },
        {
          title: "Prefix reuse",
          description: "Share of prompt tokens whose KV was reused instead of recomputed.",
          unit: "percentunit",
          queries: [q("sum(rate(llmfleet_prefix_hit_tokens_total[5m])) / clamp_min(sum(rate(llmfleet_prompt_tokens_total[5m])), 1)", "hit ratio")],
        },
        {
          title: "KV store: hit rate and loads",
          description: "Share of KV store lookups answered by a tier, and prefill pods' loads by outcome (hit, miss, store down, corrupt, timeout).",
          unit: "short",
          queries: [
            q(
              "(sum(rate(llmfleet_kv_hits_total[5m])) or vector(0)) / clamp_min((sum(rate(llmfleet_kv_hits_total[5m])) or vector(0)) + sum(rate(llmfleet_kv_misses_total[5m])), 1e-9)",
              "hit rate",
            ),
            q("sum by (outcome) (rate(llmfleet_kv_store_loads_total[5m]))", "loads {{outcome}}"),
          ],
        },
        {
          title: "KV store: bytes and hits per tier",
          description: "Bytes each tier holds, and lookups each tier answered (0 for a tier that has answered none yet).",
          unit: "short",
          queries: [
            q("sum by (tier) (llmfleet_kv_bytes)", "{{tier}} bytes"),
            q("sum by (tier) (rate(llmfleet_kv_hits_total[5m])) or (sum by (tier) (llmfleet_kv_bytes) * 0)", "{{tier}} hits/s"),
          ],
        },
        {
          title: "KV hand-off latency p90",
          description: "Prefill → decode hand-off time at the 90th percentile, by stage.",
          unit: "s",
          queries: [q(p90("llmfleet_kv_handoff_seconds", "stage"), "{{stage}}")],
        },
        {
          title: "KV hand-off bytes and failures",
          description: "KV bytes moved from prefill to decode per second, and failed hand-offs (0 when none).",
          unit: "short",
          queries: [
            q("sum(rate(llmfleet_kv_handoff_bytes_sum[1m]))", "bytes/s"),
            q("sum(rate(llmfleet_kv_handoff_failures_total[5m])) or vector(0)", "failures/s"),
          ],
        },
      ],
    },
    {
      title: "Tenants",
      panels: [
        {
          title: "Requests per tenant",
          description: "Requests per second the routers answered, by tenant and HTTP status (empty tenant: open mode).",
          unit: "reqps",
          queries: [q('sum by (tenant, status) (rate(llmfleet_tenant_requests_total{role="router"}[1m]))', "{{tenant}} {{status}}")],
        },
        {
          title: "Tokens per tenant",
          description: "Prompt and completion tokens per second counted against each tenant's tokens-per-minute limit.",
          unit: "short",
          queries: [q('sum by (tenant, kind) (rate(llmfleet_tenant_tokens_total{role="router"}[1m]))', "{{tenant}} {{kind}}")],
        },
        {
          title: "Refused: 401 and 429 per tenant",
          description:
            "Requests the routers refused per second (0 when none): invalid_api_key (401, tenant empty) and the limit a tenant hit (429). Open mode shows as llmfleet_access_open = 1.",
          unit: "reqps",
          queries: [
            q("sum by (tenant, reason) (rate(llmfleet_tenant_rejected_total[1m])) or vector(0)", "{{tenant}} {{reason}}"),
            q("max(llmfleet_access_open) or vector(0)", "open mode"),
          ],
        },
        {
          title: "Cache-hit tokens per tenant",
          description: "Prompt tokens per second each tenant got from a KV cache (its own namespace, or the shared one it opted into); 0 when none.",
          unit: "short",
          queries: [q("sum by (tenant) (rate(llmfleet_tenant_prefix_hit_tokens_total[5m])) or vector(0)", "{{tenant}}")],
        },
      ],
    },
  ],
};
