/**
 * The kvstore's push of an entry's blocks to a loading pod's native TCP listener (POST
 * /v1/kv/blocks/send): ids id.0, id.1, ..., a line {index, bytes} reported per block once it is
 * staged there, up to sendWindow sends in flight (each block's connection set-up and acknowledgement
 * overlap the next blocks' bytes), reads from the tiers kept ahead of the sends (readWindow).
 *
 * Two orders. "manifest" (what pods before order "any" ask for): every block in the manifest's
 * order. "any": the meta block first, then each kv block as soon as its read has ended. Reads
 * sharing a slow link (an object store at 1 Gbit/s) end together, about when the last one does, so
 * in manifest order a load's blocks came in one burst at the end of the transfer and the pod could
 * decode nothing before it; in read order the pod decodes blocks while the rest still move
 * (docs/kv-store.md, bench:kv-link).
 */
import { READ_WINDOW_MIN, readWindow } from "../kvstore/in-windows.ts";
import { KV_SEND_STATUS, TCP_CHUNK_BYTES, type KvListener } from "../pd/kv-transport.ts";
import type { KvStoreMetrics } from "../kvstore/store-metrics.ts";
import type { StoreHit, TieredStore } from "../kvstore/tiered-store.ts";

export type PushOrder = "manifest" | "any";
export interface PushTarget {
  tcp: KvListener;
  keys: string[];
  host: string;
  port: number;
  id: string;
}
export interface PushDeps {
  store: TieredStore;
  metrics: KvStoreMetrics;
  /** Blocks in flight at once per push (the kvstore's --kv-streams); default PUSH_SEND_WINDOW. */
  sendWindow?: number;
}
export type Staged = { index: number; bytes: number };
/** The line that ends a push early: a block missing, refused or not delivered. */
export type PushFailure = { index: number; error: string };

/**
 * Blocks in flight at once per push by default, each on its own connection (the kvstore's
 * --kv-streams sets it). 8 did not load faster than 4 on the 16-CPU GPU machine, though the wire
 * alone moves more over 8 (BENCHMARKS.md, session 23 run of bench:http, "Push window 4 against 8").
 */
export const PUSH_SEND_WINDOW = 4;

/**
 * The reads a push keeps ahead of its sends: READ_WINDOW_MIN until a kv block's size is known, then
 * readWindow of the largest seen (in-windows.ts: more of an entry's small coded blocks, no more of
 * its large raw ones).
 */
class PushWindow {
  size = READ_WINDOW_MIN;
  private largest = 0;

  /** Block `index` was read, `bytes` long (the meta block does not count). */
  saw(index: number, bytes: number): void {
    if (index === 0 || bytes <= this.largest) return;
    this.largest = bytes;
    this.size = readWindow(bytes);
  }
}

/**
 * Holds pods' uploads to this store back while a push runs (a kvPause hold on the store's listener,
 * which nests over pushes at once; each upload's connection waits at most 2 s in all): a load is on
 * a request's path, an upload is not, and on one host a 1 GB load during another pod's 1 GB upload
 * took 2-4x as long as alone (BENCHMARKS.md). LLMFLEET_KV_STORE_HOLD_UPLOADS=0 turns it off (the
 * benchmarks' baseline).
 */
function holdUploads(tcp: KvListener): () => void {
  const pause = tcp.addon.kvPause?.bind(tcp.addon);
  if (!pause || process.env.LLMFLEET_KV_STORE_HOLD_UPLOADS === "0") return () => undefined;
  pause(tcp.handle, true);
  return () => void pause(tcp.handle, false);
}

/** Sends the blocks to the pod's listener in `order`; the failure that ended it early, or undefined. */
export async function pushBlocks(deps: PushDeps, to: PushTarget, order: PushOrder, staged: (line: Staged) => void): Promise<PushFailure | undefined> {
  const release = holdUploads(to.tcp);
  try {
    return await (order === "any" ? new AnyOrderPush(deps, to, staged).run() : pushInOrder(deps, to, staged));
  } finally {
    release();
  }
}

/** One block to the pod's listener as id.index. */
async function sendBlock(deps: PushDeps, to: PushTarget, index: number, got: StoreHit | undefined): Promise<Staged | PushFailure> {
  if (!got) return { index, error: "missing" };
  try {
    const sent = await to.tcp.addon.kvSend(got.value, to.host, to.port, `${to.id}.${index}`, "{}", TCP_CHUNK_BYTES, 30_000);
    if (sent.status !== KV_SEND_STATUS.ok) return { index, error: `refused (status ${sent.status}: ${sent.message})` };
  } catch (err) {
    return { index, error: (err as Error).message };
  }
  deps.metrics.blockBytes.inc({ direction: "out", path: "tcp" }, got.value.length);
  return { index, bytes: got.value.length };
}

/** Manifest order: each block reported in order as it is staged (the pod places block i while later blocks move); reads run ahead of the sends (PushWindow). */
async function pushInOrder(deps: PushDeps, to: PushTarget, staged: (line: Staged) => void): Promise<PushFailure | undefined> {
  const reads: Promise<StoreHit | undefined>[] = [];
  const read = (i: number): Promise<StoreHit | undefined> => (reads[i] ??= deps.store.get(to.keys[i]!));
  const window = new PushWindow();
  const sendOne = async (index: number): Promise<Staged | PushFailure> => {
    for (let i = index + 1; i < Math.min(to.keys.length, index + window.size); i++) void read(i);
    const got = await read(index);
    if (got) window.saw(index, got.value.length);
    reads[index] = Promise.resolve(undefined); // sent: not held here any longer
    return sendBlock(deps, to, index, got);
  };
  const inFlight: Promise<Staged | PushFailure>[] = [];
  let next = 0;
  const fill = (): void => {
    while (next < to.keys.length && inFlight.length < (deps.sendWindow ?? PUSH_SEND_WINDOW)) inFlight.push(sendOne(next++));
  };
  fill();
  while (inFlight.length > 0) {
    const done = await inFlight.shift()!;
    if ("error" in done) {
      await Promise.allSettled(inFlight); // the pod frees what was staged after this
      return done;
    }
    staged(done);
    fill();
  }
  return undefined;
}

type Event = { read: number; hit: StoreHit | undefined } | { sent: number; result: Staged | PushFailure };

/**
 * Read order: the meta block (index 0) is sent and reported before any kv block; then each kv
 * block is sent once read, the lowest index first among those read. Reads, blocks read and not
 * sent, and sends together stay within the read window (PushWindow), which bounds the bytes a push
 * holds.
 */
class AnyOrderPush {
  private readonly reads = new Map<number, Promise<Event>>();
  private readonly sends = new Map<number, Promise<Event>>();
  /** Read, not sent yet: index -> value. */
  private readonly ready = new Map<number, StoreHit>();
  private nextRead = 0;
  private readonly window = new PushWindow();
  private metaStaged = false;

  constructor(
    private readonly deps: PushDeps,
    private readonly to: PushTarget,
    private readonly staged: (line: Staged) => void,
  ) {}

  async run(): Promise<PushFailure | undefined> {
    this.readAhead();
    while (this.reads.size + this.ready.size + this.sends.size > 0) {
      this.startSends();
      const event = await Promise.race([...this.reads.values(), ...this.sends.values()]);
      const failure = "read" in event ? this.onRead(event.read, event.hit) : this.onSent(event.sent, event.result);
      if (failure) {
        await Promise.allSettled(this.sends.values()); // the pod frees what was staged after this
        return failure;
      }
    }
    return undefined;
  }

  private readAhead(): void {
    const keys = this.to.keys;
    while (this.nextRead < keys.length && this.reads.size + this.ready.size + this.sends.size < this.window.size) {
      const i = this.nextRead++;
      this.reads.set(
        i,
        this.deps.store.get(keys[i]!).then((hit) => ({ read: i, hit })),
      );
    }
  }

  private startSends(): void {
    while (this.sends.size < (this.deps.sendWindow ?? PUSH_SEND_WINDOW) && this.ready.size > 0) {
      const index = Math.min(...this.ready.keys());
      if (index > 0 && !this.metaStaged) return; // kv blocks only once the pod holds the meta block
      const got = this.ready.get(index)!;
      this.ready.delete(index);
      this.sends.set(
        index,
        sendBlock(this.deps, this.to, index, got).then((result) => ({ sent: index, result })),
      );
    }
  }

  private onRead(index: number, hit: StoreHit | undefined): PushFailure | undefined {
    this.reads.delete(index);
    if (!hit) return { index, error: "missing" };
    this.window.saw(index, hit.value.length);
    this.ready.set(index, hit);
    this.readAhead();
    return undefined;
  }

  private onSent(index: number, result: Staged | PushFailure): PushFailure | undefined {
    this.sends.delete(index);
    if ("error" in result) return result;
    this.staged(result);
    if (index === 0) this.metaStaged = true;
    this.readAhead();
    return undefined;
  }
}
