// Label keys and child names: constants, so planners, selectors and tests agree.
import { GROUP } from "../../crds/schema/common.ts";

export const LABEL_NAME = "app.kubernetes.io/name";
export const LABEL_INSTANCE = "app.kubernetes.io/instance";
export const LABEL_COMPONENT = "app.kubernetes.io/component";
export const LABEL_MANAGED_BY = "app.kubernetes.io/managed-by";
export const LABEL_PART_OF = "app.kubernetes.io/part-of";
export const LABEL_MODEL = `${GROUP}/model`;
export const MANAGED_BY = "llmfleet";
export const ENGINE_APP = "llmfleet-engine";
export const ENGINE_PORT = 8000;
/** Decode pods: the native TCP listener prefill pods stream KV states to (engine --kv-port). */
export const KV_HANDOFF_PORT = 8001;
export const ROUTER_SERVICE_PORT = 80;

export type Component = "router" | "aggregated" | "prefill" | "decode" | "kvstore" | "model-cache" | "model-fill";

/** Child object name: `<owner>-<component>`, stable for the owner's lifetime. */
export function childName(owner: string, component: Component): string {
  return `${owner}-${component}`;
}

/** Immutable selector of one owner's pods (Deployment selectors cannot change after creation). */
export function selectorLabels(owner: string, component: Component): Record<string, string> {
  return { [LABEL_NAME]: ENGINE_APP, [LABEL_INSTANCE]: owner, [LABEL_COMPONENT]: component };
}

export function childLabels(owner: string, component: Component, model?: string): Record<string, string> {
  return {
    ...selectorLabels(owner, component),
    [LABEL_MANAGED_BY]: MANAGED_BY,
    [LABEL_PART_OF]: "llmfleet",
    ...(model ? { [LABEL_MODEL]: model } : {}),
  };
}

export function selectorString(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

export function serviceURL(name: string, namespace: string, port: number = ENGINE_PORT): string {
  const suffix = port === 80 ? "" : `:${port}`;
  return `http://${name}.${namespace}.svc${suffix}`;
}
