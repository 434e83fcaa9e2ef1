/** Codec names of the KVStore's `codec.name` (and `--codec`); codec.ts implements them. */
export const KV_CODECS = ["default", "qpre", "qpre8", "qsink8", "qsink4", "qrans", "qrans8", "lossless", "int8", "qdelta", "none"] as const;
export type KvCodecName = (typeof KV_CODECS)[number];

export interface KvCodec {
  /** The name written into entries (a concrete codec, never "default"). */
  readonly name: string;
  encode(state: Buffer): Buffer;
  decode(payload: Buffer): Buffer;
}
