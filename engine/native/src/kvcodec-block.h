// Blocks and rows of the qpre-family KV decoder (kvcodec-decode.cpp drives them): a block's
// header and decode tables, a row's values from its symbols, and the finishing of rows (gains,
// RoPE, F16) into the tensor. Compiled without FMA contraction (kvcodec-decode.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvcodec-decode.h"
#include "kvcodec-kernels.h"

namespace llmfleet::kvcodec {

constexpr int RANGE = 100;
constexpr int ESC = 2 * RANGE + 1;
constexpr int BUCKETS = 14;
constexpr int MAX_SHIFT = 7;
constexpr int CONTEXTS = BUCKETS + MAX_SHIFT;
// Token rows per rANS pass (even, so every pass starts on state 0).
constexpr size_t CHUNK_ROWS = 16;

// A lane's working memory, reused from tensor to tensor.
struct Scratch {
    std::vector<uint32_t> tables;  // kvcodec::TABLE_WORDS per context; wide blocks: PROB per context (kvcodec-wide.h)
    std::vector<uint8_t> contexts, symbols;
    // Wide blocks: every row's contexts and symbols (the block is decoded in one pass), the stream's padded copy.
    std::vector<uint8_t> block_contexts, block_symbols, stream;
    std::vector<float> mean, rows, gain;
    std::vector<uint32_t> hi_at;
    // Shifted blocks: the runs of channels whose high parts are consecutive in a row (from, channel,
    // count: a run ends at each shifted channel, whose low bits follow), a row's high parts gathered
    // from them, and the shifted channels with their 2^shift.
    std::vector<uint32_t> runs;
    std::vector<uint8_t> hi;
    std::vector<uint32_t> shifted;
    std::vector<double> scale;
    std::vector<uint16_t> halves;
    std::vector<double> cos, sin;
};

// One block's header, tables and stream.
struct Block {
    double step;
    const uint8_t * escapes;
    uint32_t escape_count;
    Span stream;
    size_t per_token;
    bool shifted;  // some channel has low bits (two symbols)
};

// The tensor being rebuilt: where its rows go and how they are finished.
struct Target {
    const KvDecodeJob & job;
    bool gains;  // s.gain holds the channels' factors
    int style;   // 0 none, 1 neox, 2 norm
    uint32_t tokens, channels;
};

// Reads a block's header and frequency tables into s (its means, classes, symbol layout, decode
// tables: the wide stream's where `wide`).
Block read_block(Span body, uint32_t channels, Scratch & s, bool wide);

// Gains, RoPE and F16 for `n` f32 rows (s.rows) from token `first`, written into the tensor.
void finish_rows(const Target & t, uint32_t first, uint32_t n, size_t & seed, Scratch & s);

// Values of a row whose channels all have one symbol: mean + (symbol - RANGE) * step; `escaped`:
// some symbol is an escape (the caller puts the escaped values in).
void values_plain(const uint8_t * sym, const float * mean, double step, float * x, uint32_t C, bool & escaped);

// Values of a row with shifted channels: q = (high - RANGE) << shift | low.
void values_shifted(const uint8_t * sym, Scratch & s, double step, float * x, uint32_t C, bool & escaped);

}  // namespace llmfleet::kvcodec
