/**
 * KV codec names. Users choose among KV_CODECS (KVStore `spec.codec.name`, the kvstore role's
 * `--codec`): what each gives, not how. The research codecs the benchmarks compare stay reachable
 * through `--research-codec` (bench/kv-codec.ts, docs/kv-store.md); their names are no longer
 * accepted where users choose, and the message says what replaces them. Entries name their concrete
 * codec (KvCodec.name), so entries stored under any codec, retired ones included, still decode.
 */
export const KV_CODECS = ["none", "lossless", "compact", "default"] as const;
export type KvCodecName = (typeof KV_CODECS)[number];

/** Codecs the benchmarks compare; a kvstore takes one with --research-codec. */
export const RESEARCH_KV_CODECS = ["int8", "qdelta", "qrans", "qrans8", "qpre", "qpre8", "qsink8", "qsink4"] as const;

/**
 * Research variants of compact for the benchmarks' sweeps: "compact1@0.2" is compact at scale
 * 0.2; "compactu@0.2" the same without the finer first layers (one step rule for all layers).
 */
export const COMPACT_VARIANT = /^compact([1u])@([0-9]*\.?[0-9]+)$/;

/** A name --research-codec takes: a research codec or a compact variant. */
export function isResearchCodec(name: string): boolean {
  return (RESEARCH_KV_CODECS as readonly string[]).includes(name) || COMPACT_VARIANT.test(name);
}

/** What replaces a retired name where users choose a codec. */
export function retiredCodecMessage(name: string): string | undefined {
  if (!(RESEARCH_KV_CODECS as readonly string[]).includes(name)) return undefined;
  return `codec ${name} is retired as a setting: use compact (the recommended lossy codec) or lossless (exact); entries stored under ${name} still load`;
}

/** A user's codec choice, or an error that names the choices (and the replacement of a retired name). */
export function parseKvCodecName(name: string): KvCodecName {
  if ((KV_CODECS as readonly string[]).includes(name)) return name as KvCodecName;
  throw new Error(retiredCodecMessage(name) ?? `codec must be one of ${KV_CODECS.join(", ")}; got ${name}`);
}

export interface KvCodec {
  /** The name written into entries (a concrete codec, never "default" or "compact"). */
  readonly name: string;
  encode(state: Buffer): Buffer;
  decode(payload: Buffer): Buffer;
}
