/** Codec names of the KVStore's `codec.name` (and `--codec`); codec.ts implements them. */
export const KV_CODECS = ["default", "lossless", "int8", "none"] as const;
export type KvCodecName = (typeof KV_CODECS)[number];
