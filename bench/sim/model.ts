// The performance model of one prefill replica and of the GPU nodes under it, from the H100
// figures in /work/shared/GPU.md (7.2B f16 llama-shape model, node-llama-cpp source build).
export interface EngineModel {
  /** Prefill throughput of one replica, prompt tokens/s. GPU.md: 15,692 tok/s at 8,192 tokens. */
  prefillTokensPerSecond: number;
  /** Fixed cost per prefill (tokenize, schedule, KV block bookkeeping), seconds. */
  prefillOverheadSeconds: number;
  /** KV state per token, bytes. GPU.md: 131,088 B/token. */
  kvBytesPerToken: number;
  /** Prefill → decode hand-off bandwidth, bytes/s: a quarter of PCIe 5 x16 (63 GB/s) for framing and copies. */
  handoffBytesPerSecond: number;
  /** First decode step after the hand-off, seconds. GPU.md: 158 tok/s for one sequence. */
  firstTokenSeconds: number;
}

export const H100_7B: EngineModel = {
  prefillTokensPerSecond: 15692,
  prefillOverheadSeconds: 0.005,
  kvBytesPerToken: 131088,
  handoffBytesPerSecond: 16e9,
  firstTokenSeconds: 1 / 158,
};

/** Seconds a replica is busy prefilling `tokens`. */
export function prefillSeconds(m: EngineModel, tokens: number): number {
  return m.prefillOverheadSeconds + tokens / m.prefillTokensPerSecond;
}

/** Seconds from prefill done to the first token at the client: KV hand-off plus one decode step. */
export function handoffSeconds(m: EngineModel, tokens: number): number {
  return (tokens * m.kvBytesPerToken) / m.handoffBytesPerSecond + m.firstTokenSeconds;
}
