/**
 * --discover-endpoints: the router resolves its upstream Services to their ready pods through
 * EndpointSlices (discovery.k8s.io/v1, watched through the Kubernetes API). Behind a Service,
 * kube-proxy picks a pod per connection, so prefix-aware routing could only choose between pools
 * and the decode pool was never chosen by load per pod; with the pods themselves in the lists,
 * the router's policies work per pod, as on one machine.
 *
 * A Service URL is http://<service>.<namespace>.svc[.cluster.local][:port]; other URLs stay as
 * they are. A Service whose pods are not known (watch not yet synced, API unreachable, no ready
 * endpoint) stays in the lists as its Service URL, so discovery can only add precision, never
 * take the router's upstreams away.
 */
import type { KubeClient } from "../../lib/kube/client.ts";
import { R } from "../../lib/kube/resources.ts";
import type { KubeObject } from "../../lib/kube/types.ts";
import { Informer } from "../../lib/kube/informer.ts";
import type { RouterUpstreams, UpstreamLists } from "./upstreams.ts";

export interface EndpointSlice extends KubeObject {
  addressType?: string;
  endpoints?: { addresses?: string[]; conditions?: { ready?: boolean | null } }[];
  ports?: { name?: string; port?: number }[] | null;
}

export interface ServiceRef {
  service: string;
  namespace: string;
}

const SERVICE_URL = /^https?:\/\/([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?(?::\d+)?\/?$/;

/** The Service an upstream URL names, if it is a cluster Service URL. */
export function serviceOf(url: string): ServiceRef | undefined {
  const m = SERVICE_URL.exec(url);
  return m ? { service: m[1]!, namespace: m[2]! } : undefined;
}

/** The port a slice's endpoints serve on: the one named http, or its only one. */
function slicePort(slice: EndpointSlice): number | undefined {
  return slice.ports?.find((p) => p.name === "http")?.port ?? slice.ports?.[0]?.port;
}

/** The addresses of a slice's ready endpoints (a nil ready condition means ready, discovery.k8s.io/v1). */
function readyAddresses(slice: EndpointSlice): string[] {
  return (slice.endpoints ?? []).filter((ep) => ep.conditions?.ready !== false).flatMap((ep) => ep.addresses ?? []);
}

/** The ready pods of a Service's slices as URLs (scheme of the Service URL, the slice's target port), sorted. */
export function podURLs(slices: readonly EndpointSlice[], scheme = "http"): string[] {
  const urls = new Set<string>();
  for (const slice of slices) {
    const port = slicePort(slice);
    const family = slice.addressType;
    if (!port || (family !== "IPv4" && family !== "IPv6")) continue;
    for (const a of readyAddresses(slice)) urls.add(`${scheme}://${family === "IPv6" ? `[${a}]` : a}:${port}`);
  }
  return [...urls].sort();
}

/** Replaces each Service URL by its pods' URLs; a Service with no pods known stays. */
export function expandLists(lists: UpstreamLists, podsOf: (url: string) => string[] | undefined): UpstreamLists {
  const expand = (urls: string[]): string[] => [...new Set(urls.flatMap((u) => podsOf(u) ?? [u]))];
  return { prefill: expand(lists.prefill), decode: expand(lists.decode), aggregated: expand(lists.aggregated) };
}

export interface DiscoveryOptions {
  log?: (line: string) => void;
  /**
   * Rewrites each pod URL before use, for networks where pod addresses are reached through a
   * translation (tests map documentation addresses, which EndpointSlices accept, to loopback,
   * which they refuse). Default: none.
   */
  mapUrl?: (url: string) => string;
}

export interface EndpointDiscovery extends Disposable {
  /** Resolves when every Service's slices have been listed once (or at once, when none is a Service URL). */
  synced: Promise<void>;
}

/**
 * Watches the EndpointSlices of every Service URL in `lists` and keeps `upstreams` at the
 * expanded lists (a new generation on every change of the pods).
 */
export function discoverEndpoints(client: KubeClient, lists: UpstreamLists, upstreams: RouterUpstreams, opts: DiscoveryOptions = {}): EndpointDiscovery {
  const log = opts.log ?? ((): void => undefined);
  const mapUrl = opts.mapUrl ?? ((u: string): string => u);
  const urls = [...new Set([...lists.prefill, ...lists.decode, ...lists.aggregated])].filter((u) => serviceOf(u));
  const informers = new Map<string, Informer<EndpointSlice>>();
  const podsOf = (url: string): string[] | undefined => {
    const slices = informers.get(url)?.list() ?? [];
    const pods = podURLs(slices, new URL(url).protocol.replace(":", "")).map(mapUrl);
    return pods.length > 0 ? pods : undefined;
  };
  let applied = "";
  const apply = (): void => {
    const next = expandLists(lists, podsOf);
    const key = JSON.stringify(next);
    if (key === applied) return;
    applied = key;
    upstreams.replace(next, upstreams.generation + 1);
    log(`router: upstreams from EndpointSlices (generation ${upstreams.generation}): ${key}`);
  };
  for (const url of urls) {
    const { service, namespace } = serviceOf(url)!;
    const informer = new Informer<EndpointSlice>(client, R.EndpointSlice, {
      namespace,
      labelSelector: `kubernetes.io/service-name=${service}`,
      onError: (err) => log(`router: EndpointSlices of ${namespace}/${service}: ${(err as Error).message}; keeping the last known pods`),
    });
    informer.on(apply);
    informers.set(url, informer);
    void informer.run();
  }
  const synced = Promise.all([...informers.values()].map((i) => i.waitForSync())).then(apply);
  return {
    synced,
    [Symbol.dispose]: () => {
      for (const i of informers.values()) i.stop();
    },
  };
}
