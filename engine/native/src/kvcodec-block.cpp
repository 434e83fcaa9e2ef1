// Blocks and rows of the qpre-family KV decoder (kvcodec-block.h).
#include "kvcodec-block.h"

#include "kvcodec-wide.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace llmfleet::kvcodec {

// The row loops (values, RoPE, F16) also in an AVX2 version, chosen at load time where the CPU has it.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define LLMFLEET_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LLMFLEET_VECTOR_CLONES
#endif

namespace {

// Per-channel means and classes; the symbol layout of a token row.
void read_channels(Span head, uint32_t channels, Block & b, Scratch & s, bool used[CONTEXTS]) {
    std::vector<uint8_t> row;
    row.reserve(2 * channels);
    s.runs.clear();
    s.shifted.clear();
    for (uint32_t j = 0; j < channels; j++) {
        s.mean[j] = half_to_float(head.u16(3 * j));
        const uint8_t c = head.u8(3 * j + 2);
        const int bucket = c & 15, shift = c >> 4;
        if (bucket >= BUCKETS || shift > MAX_SHIFT) corrupt("a channel class is out of range");
        s.scale[j] = static_cast<double>(1 << shift);
        s.hi_at[j] = static_cast<uint32_t>(row.size());
        if (j == 0 || s.hi_at[j] != s.hi_at[j - 1] + 1) s.runs.insert(s.runs.end(), {s.hi_at[j], j, 0});
        s.runs.back()++;
        row.push_back(static_cast<uint8_t>(bucket));
        used[bucket] = true;
        if (shift) {
            row.push_back(static_cast<uint8_t>(BUCKETS + shift - 1));
            used[BUCKETS + shift - 1] = true;
            s.shifted.push_back(j);
        }
    }
    b.shifted = !s.shifted.empty();
    b.per_token = row.size();
    // The contexts of CHUNK_ROWS rows, so a pass indexes them directly.
    s.contexts.resize(CHUNK_ROWS * b.per_token);
    for (size_t r = 0; r < CHUNK_ROWS; r++) std::copy(row.begin(), row.end(), s.contexts.begin() + static_cast<std::ptrdiff_t>(r * b.per_token));
    s.symbols.assign(CHUNK_ROWS * b.per_token, 0);
}

// The frequency tables of the contexts, as decode tables (the wide stream's where `wide`); returns
// the offset after them.
size_t read_tables(Span body, size_t o, const bool used[CONTEXTS], Scratch & s, bool wide) {
    s.tables.resize(static_cast<size_t>(CONTEXTS) * (wide ? PROB : TABLE_WORDS));
    for (int c = 0; c < CONTEXTS; c++) {
        const uint32_t lo = body.u8(o), hi = body.u8(o + 1);
        o += 2;
        if (lo > hi) {
            if (used[c]) corrupt("a channel uses an empty frequency table");
            continue;
        }
        if (hi > static_cast<uint32_t>(ESC)) corrupt("a frequency table has symbols beyond the alphabet");
        Span f = body.sub(o, 2 * (hi - lo + 1));
        o += f.n;
        uint32_t * table = s.tables.data() + static_cast<size_t>(c) * (wide ? PROB : TABLE_WORDS);
        uint8_t * slot = reinterpret_cast<uint8_t *>(table);
        uint32_t * fc = table + PROB / 4;
        uint32_t filled = 0;
        for (uint32_t sym = lo; sym <= hi; sym++) {
            const uint32_t freq = f.u16(2 * (sym - lo));
            if (freq > PROB - filled) corrupt("a frequency table sums past 2^12");
            if (wide) {
                wide_slots(table + filled, sym, freq);
            } else {
                std::memset(slot + filled, static_cast<int>(sym), freq);
                fc[sym] = freq | (filled << 16);
            }
            filled += freq;
        }
        if (filled != PROB) corrupt("a frequency table does not sum to 2^12");
    }
    return o;
}

}  // namespace

Block read_block(Span body, uint32_t channels, Scratch & s, bool wide) {
    Block b{};
    b.step = static_cast<double>(body.f32(0));
    s.mean.resize(channels);
    s.hi_at.resize(channels);
    s.scale.resize(channels);
    s.hi.resize(channels);
    bool used[CONTEXTS] = {};
    read_channels(body.sub(4, 3 * static_cast<size_t>(channels)), channels, b, s, used);
    const size_t e = 4 + 3 * static_cast<size_t>(channels);
    b.escape_count = body.u32(e);
    b.escapes = body.sub(e + 4, 2 * static_cast<size_t>(b.escape_count)).p;
    b.stream = body.from(read_tables(body, e + 4 + 2 * static_cast<size_t>(b.escape_count), used, s, wide));
    return b;
}

namespace {

// RoPE angles of token t (rope.ts's ropeTables, one row at a time): a seed row where the position
// does not follow the previous token's, else the previous row advanced by the step angles.
inline __attribute__((always_inline)) void rope_angles(const KvDecodeJob & j, uint32_t token, size_t & seed, double * __restrict c, double * __restrict sn) {
    const size_t pairs = j.pairs;
    const bool follows = token > 0 && static_cast<int64_t>(j.positions[token]) == static_cast<int64_t>(j.positions[token - 1]) + 1;
    if (!follows) {
        if (seed >= j.seed_count) throw std::runtime_error("KV codec: RoPE seeds missing for a tensor");
        const double * row = j.seeds + seed * 2 * pairs;
        std::copy(row, row + pairs, c);
        std::copy(row + pairs, row + 2 * pairs, sn);
        seed++;
        return;
    }
    const double * __restrict sc = j.step_cos;
    const double * __restrict ss = j.step_sin;
    for (size_t i = 0; i < pairs; i++) {
        const double pc = c[i], ps = sn[i];
        c[i] = pc * sc[i] - ps * ss[i];
        sn[i] = ps * sc[i] + pc * ss[i];
    }
}

// Re-rotates a key row: pair i is (x[i], x[i + pairs]) for neox, (x[2i], x[2i + 1]) for norm.
inline __attribute__((always_inline)) void rotate_row(float * __restrict x, const double * __restrict c, const double * __restrict sn, size_t pairs, int style) {
    if (style == 1) {
        float * __restrict y = x + pairs;
        for (size_t i = 0; i < pairs; i++) {
            const double xa = x[i], xb = y[i];
            x[i] = static_cast<float>(xa * c[i] - xb * sn[i]);
            y[i] = static_cast<float>(xb * c[i] + xa * sn[i]);
        }
        return;
    }
    for (size_t i = 0; i < pairs; i++) {
        const double xa = x[2 * i], xb = x[2 * i + 1];
        x[2 * i] = static_cast<float>(xa * c[i] - xb * sn[i]);
        x[2 * i + 1] = static_cast<float>(xb * c[i] + xa * sn[i]);
    }
}

}  // namespace

LLMFLEET_VECTOR_CLONES void finish_rows(const Target & t, uint32_t first, uint32_t n, size_t & seed, Scratch & s) {
    const uint32_t C = t.channels;
    for (uint32_t r = 0; r < n; r++) {
        float * __restrict x = s.rows.data() + static_cast<size_t>(r) * C;
        if (t.gains) {
            const float * __restrict g = s.gain.data();
            for (uint32_t j = 0; j < C; j++) x[j] = x[j] * g[j];
        }
        if (t.style) {
            rope_angles(t.job, first + r, seed, s.cos.data(), s.sin.data());
            rotate_row(x, s.cos.data(), s.sin.data(), C >> 1, t.style);
        }
    }
    uint16_t * out = t.job.out;
    if (t.job.token_axis == 0) {
        kvcodec::floats_to_halves_any(s.rows.data(), out + static_cast<size_t>(first) * C, static_cast<size_t>(n) * C);
        return;
    }
    // Transposed: each channel's n tokens are contiguous in the tensor.
    uint16_t * h = s.halves.data();
    kvcodec::floats_to_halves_any(s.rows.data(), h, static_cast<size_t>(n) * C);
    kvcodec::write_transposed(h, n, C, out, t.job.stride(), first);
}

LLMFLEET_VECTOR_CLONES void values_plain(const uint8_t * __restrict sym, const float * __restrict mean, double step, float * __restrict x, uint32_t C, bool & escaped) {
    uint32_t esc = 0;
    for (uint32_t j = 0; j < C; j++) {
        esc |= static_cast<uint32_t>(sym[j] == ESC);
        x[j] = static_cast<float>(static_cast<double>(mean[j]) + static_cast<double>(static_cast<int>(sym[j]) - RANGE) * step);
    }
    escaped = esc != 0;
}

// The high parts gathered run by run and valued as a plain row (an unshifted channel's value is the
// same either way: its q is hi - RANGE exactly), then the shifted channels again with their low bits,
// in doubles (exact: small integers).
void values_shifted(const uint8_t * sym, Scratch & s, double step, float * x, uint32_t C, bool & escaped) {
    uint8_t * hi = s.hi.data();
    const uint32_t * run = s.runs.data();
    for (size_t r = 0; r < s.runs.size(); r += 3) std::memcpy(hi + run[r + 1], sym + run[r], run[r + 2]);
    values_plain(hi, s.mean.data(), step, x, C, escaped);
    for (const uint32_t j : s.shifted) {
        const double q = static_cast<double>(static_cast<int>(hi[j]) - RANGE) * s.scale[j] + static_cast<double>(sym[s.hi_at[j] + 1]);
        x[j] = static_cast<float>(static_cast<double>(s.mean[j]) + q * step);
    }
}

}  // namespace llmfleet::kvcodec
