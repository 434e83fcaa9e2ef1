// Native encoding of the qpre-family KV codecs' tensors (engine/kvcodec/qpre.ts: encodeSinkTensor,
// encodeQpreTensor, qpre-block.ts's encodeBlock), the inverse of kvcodec-decode.h, byte-identical
// to the JavaScript encoder: the same double/f32 operations in the same order, no FMA contraction,
// JavaScript's Math.round and int32 conversions, and what V8 computes with functions of its own
// passed in (the step policy's power, the RoPE candidates' seed angles, the gain factors).
//
// One difference is possible in principle: the RoPE candidate chosen by the least summed log of the
// channels' spreads and a channel's class (log2 of its spread in steps, rounded) use the C
// library's log and log2, which may differ from V8's in the last bit; the output changes only where
// two candidates' sums or a spread ratio lie within that bit of a tie (never seen; the test states
// and the real Gemma state encode byte-identically).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llmfleet {

// A RoPE candidate for keys, with its angles as rope.ts computes them (kvcodec-decode.h's seeds).
struct KvRopeCandidate {
    int style = 0;     // 1 neox, 2 norm
    double base = 0;   // as JavaScript has it (the head stores it as f32)
    const double * step_cos = nullptr;
    const double * step_sin = nullptr;
    const double * seeds = nullptr;
    size_t seed_count = 0;
};

// One tensor to code, and the policy's decisions for it.
struct KvEncodeJob {
    int kind = 0;  // 1 coded (bulk + recent), 3 coded with sink rows, 4 as 3 with the wide rANS stream
    const uint16_t * data = nullptr;  // rows * cols F16
    uint32_t rows = 0, cols = 0;
    uint8_t token_axis = 0;
    bool key = false;  // un-rotate by the candidate that fits
    const int32_t * positions = nullptr;
    std::vector<KvRopeCandidate> ropes;
    std::vector<uint32_t> exact_rows;  // kind 3: the sink rows, kept exact
    const int8_t * gains = nullptr;    // kind 3: channel gain codes (one per channel) or nullptr
    double step = 0;                   // the policy's step (fraction of the RMS channel spread)
    std::vector<uint32_t> segment_tokens;  // oldest first; kind 1: bulk, recent (0: none)
    std::vector<double> segment_scales;
};

// 2^(code/32) as f32 per gain code (index code + 128), as qpre.ts's scaleChannels computes it.
using EncodeGainTable = const float *;

// Codes every job's tensor body (what qpre.ts writes after the part header) on `threads` threads.
std::vector<std::vector<uint8_t>> kv_encode_all(const std::vector<KvEncodeJob> & jobs, EncodeGainTable gains, int threads);

}  // namespace llmfleet
