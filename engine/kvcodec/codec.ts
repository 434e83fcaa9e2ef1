/**
 * KV codecs: turn a llama.cpp sequence state into the payload of a stored entry and back.
 * Entries name their codec, so a store may change codec without invalidating what it holds.
 */
import type { KvCodec, KvCodecName } from "./codec-names.ts";
import { INT8, LOSSLESS, QDELTA } from "./codecs.ts";

export type { KvCodec };

const none: KvCodec = { name: "none", encode: (s) => s, decode: (p) => p };

const codecs = new Map<string, KvCodec>([none, LOSSLESS, INT8, QDELTA].map((c) => [c.name, c]));

/** What "default" means: the fastest codec whose load time keeps cached TTFT low on CPU. */
export const DEFAULT_CODEC = "none";

export function kvCodec(name: KvCodecName | string): KvCodec {
  const codec = codecs.get(name === "default" ? DEFAULT_CODEC : name);
  if (!codec) throw new Error(`unknown KV codec ${name}`);
  return codec;
}
