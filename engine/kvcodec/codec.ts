/**
 * KV codecs: turn a llama.cpp sequence state into the payload of a stored entry and back.
 * Entries name their codec, so a store may change codec without invalidating what it holds.
 */
import type { KvCodecName } from "./codec-names.ts";

export interface KvCodec {
  /** The name written into entries (a concrete codec, never "default"). */
  readonly name: string;
  encode(state: Buffer): Buffer;
  decode(payload: Buffer): Buffer;
}

const none: KvCodec = { name: "none", encode: (s) => s, decode: (p) => p };

const codecs = new Map<string, KvCodec>([["none", none]]);

export function registerKvCodec(codec: KvCodec): void {
  codecs.set(codec.name, codec);
}

/** What "default" means: the fastest codec whose load time keeps cached TTFT low on CPU. */
export const DEFAULT_CODEC = "none";

export function kvCodec(name: KvCodecName | string): KvCodec {
  const codec = codecs.get(name === "default" ? DEFAULT_CODEC : name);
  if (!codec) throw new Error(`unknown KV codec ${name}`);
  return codec;
}
