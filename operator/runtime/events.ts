// Kubernetes Events (events.k8s.io/v1), written as client-go's events recorder writes them:
// reportingController llmfleet, one Event per distinct occurrence, and a repeat of the same
// event on the same object (same type, reason, action and note) within a window counted in the
// first Event's `series` instead of written anew. Reconcilers call recordFlips where they write
// status; anything that acts (the autoscaler's scale, a node-group run) calls record.
//
// Events are best effort, as everywhere in Kubernetes: a refused Event is counted and reported
// through onError, never thrown, so an Event API problem cannot stop status from being written.
import { hostname } from "node:os";
import { isNotFound, type KubeClient } from "../../lib/kube/client.ts";
import { apiVersionOf, R } from "../../lib/kube/resources.ts";
import { nameOf, namespaceOf, type KubeObject } from "../../lib/kube/types.ts";
import type { Condition } from "../../crds/schema/common.ts";
import { conditionFlips, type ConditionFlip } from "../plan/conditions.ts";
import { fieldManager } from "./apply.ts";

export const REPORTING_CONTROLLER = "llmfleet";
/** client-go's window for counting a repeat in the first Event's series (tools/events: 6 minutes). */
const SERIES_WINDOW_MS = 6 * 60_000;
/** Distinct events remembered for series (client-go keeps 4096). */
const MAX_REMEMBERED = 4096;
/** Reasons that make a condition flip a Warning: something the user must fix. */
const WARNING_REASONS = new Set(["InvalidSpec", "ModelNotFound", "ReferenceNotFound"]);

export interface EventInput {
  type: "Normal" | "Warning";
  /** Why, in UpperCamelCase (e.g. Available, SuccessfulRescale); at most 128 characters. */
  reason: string;
  /** What was done or failed (e.g. Scale, ConditionChanged); at most 128 characters. */
  action: string;
  /** A human-readable sentence; cut to 1024 characters. */
  note: string;
}

export interface EventRecorderOptions {
  /** reportingInstance: this replica. Default <hostname>-<pid>. */
  instance?: string;
  /** A repeat within this many milliseconds of the last one goes into the series. Default 6 minutes. */
  seriesWindowMs?: number;
  /** Clock in milliseconds; injectable for tests. Default Date.now. */
  now?: () => number;
  /** Told about an Event the API server refused (it is dropped). Default: nothing. */
  onError?: (err: unknown, event: EventInput, regarding: KubeObject) => void;
}

interface Written {
  namespace: string;
  name: string;
  count: number;
  lastMs: number;
}

/** An Event's time as the API server's MicroTime wants it: RFC 3339 with exactly six fraction digits. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** The Event recorded when a condition flips, e.g. "Ready: False → True (Available): 3/3 replicas ready." */
export function flipEvent(flip: ConditionFlip): EventInput {
  const { to } = flip;
  const change = flip.from === undefined ? `${to.type} is ${to.status}` : `${to.type}: ${flip.from} → ${to.status}`;
  const warning = to.status === "False" && WARNING_REASONS.has(to.reason);
  return { type: warning ? "Warning" : "Normal", reason: to.reason, action: "ConditionChanged", note: `${change} (${to.reason}): ${to.message}` };
}

export class EventRecorder {
  private readonly written = new Map<string, Written>();
  /** The status last recorded per object and condition type. */
  private readonly recorded = new Map<string, string>();
  private readonly instance: string;
  private readonly now: () => number;
  private sequence = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly opts: EventRecorderOptions = {},
  ) {
    this.instance = (opts.instance ?? `${hostname()}-${process.pid}`).slice(0, 128);
    this.now = opts.now ?? Date.now;
  }

  /**
   * Records an Event for each condition that flipped between `before` and `after`, once per
   * transition: a second pass that sees the same flip (its cache had not yet caught up with the
   * status it wrote) records nothing.
   */
  async recordFlips(regarding: KubeObject, before: Condition[] | undefined, after: Condition[] | undefined): Promise<void> {
    for (const flip of conditionFlips(before, after)) {
      const key = `${regarding.metadata?.uid ?? ""}/${flip.to.type}`;
      if (this.recorded.get(key) === flip.to.status) continue;
      remember(this.recorded, key, flip.to.status);
      await this.record(regarding, flipEvent(flip));
    }
  }

  /** Records one Event about `regarding`, or counts it in the series of the same Event recorded lately. */
  async record(regarding: KubeObject, event: EventInput): Promise<void> {
    const key = [regarding.metadata?.uid, event.type, event.reason, event.action, event.note].join("\0");
    const nowMs = this.now();
    const prev = this.written.get(key);
    try {
      if (prev && nowMs - prev.lastMs <= (this.opts.seriesWindowMs ?? SERIES_WINDOW_MS)) await this.repeat(key, prev, nowMs, { regarding, event });
      else await this.create(key, regarding, event);
    } catch (err) {
      this.opts.onError?.(err, event, regarding);
    }
  }

  private async create(key: string, regarding: KubeObject, event: EventInput): Promise<void> {
    const nowMs = this.now();
    const name = `${nameOf(regarding)}.${(BigInt(nowMs) * 1_000_000n + BigInt(this.sequence++ % 1_000_000)).toString(16)}`;
    const written: Written = { namespace: namespaceOf(regarding) || "default", name, count: 1, lastMs: nowMs };
    // Remembered before the call, so a second worker recording the same event meanwhile counts it.
    remember(this.written, key, written);
    try {
      await this.client.create(R.Event, eventObject({ ...written, regarding, event, instance: this.instance, nowMs }), fieldManager("events"));
    } catch (err) {
      this.written.delete(key);
      throw err;
    }
  }

  private async repeat(key: string, prev: Written, nowMs: number, what: { regarding: KubeObject; event: EventInput }): Promise<void> {
    prev.count++;
    prev.lastMs = nowMs;
    const series = { count: prev.count, lastObservedTime: microTime(nowMs) };
    try {
      await this.client.mergePatch(R.Event, { namespace: prev.namespace, name: prev.name }, { series });
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.create(key, what.regarding, what.event); // the Event expired (the API server's --event-ttl): start anew
    }
  }
}

interface EventFields {
  namespace: string;
  name: string;
  regarding: KubeObject;
  event: EventInput;
  instance: string;
  nowMs: number;
}

/** events.k8s.io/v1 Event, the fields we write. */
interface EventObject extends KubeObject {
  eventTime: string;
  reportingController: string;
  reportingInstance: string;
  action: string;
  reason: string;
  regarding: { apiVersion?: string; kind?: string; name: string; namespace: string; uid?: string };
  note: string;
  type: EventInput["type"];
}

function eventObject(f: EventFields): EventObject {
  const { regarding, event } = f;
  return {
    apiVersion: apiVersionOf(R.Event),
    kind: "Event",
    metadata: { name: f.name, namespace: f.namespace },
    eventTime: microTime(f.nowMs),
    reportingController: REPORTING_CONTROLLER,
    reportingInstance: f.instance,
    action: event.action.slice(0, 128),
    reason: event.reason.slice(0, 128),
    regarding: {
      apiVersion: regarding.apiVersion,
      kind: regarding.kind,
      name: nameOf(regarding),
      namespace: namespaceOf(regarding),
      uid: regarding.metadata?.uid,
    },
    note: event.note.slice(0, 1024),
    type: event.type,
  };
}

/** Sets key (as the newest entry) and drops the oldest beyond MAX_REMEMBERED. */
function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > MAX_REMEMBERED) map.delete(map.keys().next().value as string);
}
