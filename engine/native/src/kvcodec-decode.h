// Native decoding of the qpre-family KV codecs (engine/kvcodec/qpre.ts: compact1, the qsink and
// qpre research codecs), bit-identical to the JavaScript decoder: every float operation is the
// one JavaScript does, in the same order and precision (doubles where it computes in doubles, f32
// where it stores to a Float32Array), and the files are compiled without FMA contraction.
//
// What stays in JavaScript (engine/kvcodec/native-codec.ts): the entry's container, the Brotli
// parts (cell metadata, exact tensors) and the rebuilt state's layout; the RoPE angles' seeds
// (Math.cos/Math.sin/Math.pow of V8 are not the C library's, so JavaScript computes the few it
// needs and this code only runs the angle-addition recurrence between them, as rope.ts does).
//
// Byte format decoded here (little-endian):
//   kind 3 tensor (sink rows, compact1, compact1b and qsink), kind 4 (compact2b: kind 3 whose blocks
//     carry the wide rANS stream, kvcodec-wide.h): coded length u32 | tiered body | sink count u32
//     | per sink: token index u32, F16[channels] | gain count u32 (0 or channels) | gain codes i8[]
//   tiered body: rows u32 | cols u32 | token axis u8 | rope style u8 (0 none, 1 neox, 2 norm)
//     | rope base f32 | segments u8 | per segment tokens u32, length u32 | blocks, oldest first
//   kind 1 tensor (qpre, qpre8): rows u32 | cols u32 | token axis u8 | rope style u8 | rope base
//     f32 | recent u32 | bulk length u32 | bulk block (tokens - recent rows) | recent block
//   block (qpre-block.ts): step f32 | per channel mean f16, class u8 (bucket | shift << 4)
//     | escapes u32 + f16[] | per context (21) lo u8, hi u8, freq u16[hi - lo + 1] | rANS stream
//   rANS (rans.ts): 12-bit frequencies, two states (even and odd symbols) in [2^23, 2^31) read
//     first as two u32, bytes renormalised in; per token one symbol per channel (its high part;
//     context = bucket) and a second for a shifted channel (its low bits; context 13 + shift).
// Value of channel j: escape ? F16 : (double) mean_j + ((hi - 100) << shift | low) * (double)
// step, stored as f32; then times the channel's gain (f32), then keys re-rotated (doubles), then
// F16 as state-tensors.ts's f32ArrayToF16 rounds. Sink rows overwrite their token's row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace llmfleet {

// One coded tensor of a qpre-family entry and where it decodes to.
struct KvDecodeJob {
    int kind = 0;  // 1 coded, 3 coded with sink rows
    const uint8_t * body = nullptr;
    size_t body_len = 0;
    uint16_t * out = nullptr;  // rows * cols F16, the tensor's place in the rebuilt state
    uint32_t rows = 0, cols = 0;
    uint8_t token_axis = 0;
    // Token axis 1: elements from one channel's tokens to the next channel's in out; 0: cols (a dense
    // tensor). A v2 kv block's transposed V decodes straight into the state, where each channel's
    // row holds every cell of the stream, not only the block's (engine/kvstore/kv-blocks.ts).
    size_t out_stride = 0;
    size_t stride() const { return out_stride ? out_stride : cols; }
    const int32_t * positions = nullptr;  // one per token
    // Keys with a rope: cos/sin of each pair's step angle, and cos/sin rows for every token that does
    // not follow its predecessor's position (ropeTables in rope.ts), laid out seed-major: cos[pairs], sin[pairs].
    const double * step_cos = nullptr;
    const double * step_sin = nullptr;
    const double * seeds = nullptr;
    size_t seed_count = 0;
    size_t pairs = 0;  // 0: no rope data given
};

// 2^(-code/32) as f32 per gain code (index code + 128), as qpre.ts's scaleChannels computes it.
using GainTable = const float *;

// Decodes every job into its out on `threads` threads (the caller's and its decode pool's: kept from
// call to call, one per calling thread); throws std::runtime_error
// (the first reason) on a corrupt or truncated body.
void kv_decode_all(const KvDecodeJob * jobs, size_t n, GainTable gains, int threads);

}  // namespace llmfleet
