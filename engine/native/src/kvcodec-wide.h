// The wide rANS stream of the block codec compact2b (engine/kvcodec/rans.ts: ransEncodeWide,
// ransDecodeWide): L lanes (wide_lanes: 32, or 4 for a short block), symbol k in state k % L, states
// in [2^16, 2^32) renormalised by at most one 16-bit word per symbol, the words of a group of L
// symbols read in lane order. Stream: the final states (u32 each), then the words (u16), little-endian.
//
// The decoder runs a group of 32 lanes as two AVX-512 vectors where the CPU has AVX-512F (one gather
// of 16 table words per vector, the words expanded into the lanes that take one), as four AVX2
// vectors where it has AVX2 only (the expand by a permutation table), one lane at a time elsewhere
// (LLMFLEET_KVCODEC_SIMD=avx2 or none picks a narrower path); all end with the same checks (every
// word read, every state back at 2^16).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcodec-kernels.h"

namespace llmfleet::kvcodec {

constexpr size_t WIDE_LANES = 32;
constexpr uint32_t WIDE_LOW = 1u << 16;
// rans.ts's wideLanes: 32 lanes from WIDE_MIN_SYMBOLS symbols, 4 below.
constexpr size_t WIDE_MIN_SYMBOLS = 16384;
inline size_t wide_lanes(size_t symbols) { return symbols >= WIDE_MIN_SYMBOLS ? WIDE_LANES : 4; }

// A symbol's `freq` slots of a context's decode table (from its cumulative frequency on): per slot
// symbol | (freq - 1) << 8 | (slot - cum) << 20 (rans.ts's wideDecodeTables).
inline void wide_slots(uint32_t * slots, uint32_t sym, uint32_t freq) {
    const uint32_t base = sym | ((freq - 1) << 8);
    for (uint32_t i = 0; i < freq; i++) slots[i] = base | (i << 20);
}

// Decodes n symbols (contexts[k] picks symbol k's table: tables + (contexts[k] << PROB_BITS)) from
// `stream` into out; `copy` is scratch (the stream with padding, so that a vector may read past its
// end). Throws on a truncated or corrupt stream.
void wide_decode(Span stream, const uint8_t * contexts, size_t n, const uint32_t * tables, uint8_t * out, std::vector<uint8_t> & copy);

// Encodes n symbols (freq and cum: per context ESC + 1 entries) and appends the stream to out.
void wide_encode(const uint8_t * symbols, const uint8_t * contexts, size_t n, const uint16_t * freq, const uint16_t * cum, size_t alphabet, std::vector<uint8_t> & out);

}  // namespace llmfleet::kvcodec
