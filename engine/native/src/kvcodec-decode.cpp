// The qpre-family KV decoder (format and exactness rules in kvcodec-decode.h). A tensor decodes a
// chunk of token rows at a time: the rANS pass writes the chunk's symbols, then each row is
// rebuilt (values, gains, RoPE) and written as F16 straight into the rebuilt state. Every read of
// the body is bounds-checked: a corrupt or truncated body throws, it never reads past the buffer.
#include "kvcodec-decode.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace llmfleet {

namespace {

constexpr int RANGE = 100;
constexpr int ESC = 2 * RANGE + 1;
constexpr int BUCKETS = 14;
constexpr int MAX_SHIFT = 7;
constexpr int CONTEXTS = BUCKETS + MAX_SHIFT;
constexpr uint32_t PROB_BITS = 12;
constexpr uint32_t PROB = 1u << PROB_BITS;
constexpr uint32_t LOW = 1u << 23;
// Token rows per rANS pass (even, so every pass starts on state 0).
constexpr size_t CHUNK_ROWS = 16;

[[noreturn]] void corrupt(const char * what) { throw std::runtime_error(std::string("KV codec payload is corrupt: ") + what); }

struct Span {
    const uint8_t * p;
    size_t n;
    Span sub(size_t at, size_t len) const {
        if (at > n || len > n - at) corrupt("a length runs past its body");
        return {p + at, len};
    }
    Span from(size_t at) const { return sub(at, at <= n ? n - at : 0); }
    uint8_t u8(size_t at) const { return sub(at, 1).p[0]; }
    uint16_t u16(size_t at) const {
        const uint8_t * q = sub(at, 2).p;
        return static_cast<uint16_t>(q[0] | (q[1] << 8));
    }
    uint32_t u32(size_t at) const {
        const uint8_t * q = sub(at, 4).p;
        return static_cast<uint32_t>(q[0]) | (static_cast<uint32_t>(q[1]) << 8) | (static_cast<uint32_t>(q[2]) << 16) | (static_cast<uint32_t>(q[3]) << 24);
    }
    float f32(size_t at) const {
        uint32_t b = u32(at);
        float f;
        std::memcpy(&f, &b, 4);
        return f;
    }
};

// F16 bits -> f32, as state-tensors.ts's F16_TO_F32 table.
float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    const uint32_t e = (h >> 10) & 0x1f;
    const uint32_t m = h & 0x3ff;
    uint32_t bits;
    if (e == 0) {
        if (m == 0) {
            bits = sign;
        } else {
            int shift = 0;
            uint32_t mm = m;
            while (!(mm & 0x400)) {
                mm <<= 1;
                shift++;
            }
            bits = sign | ((113u - static_cast<uint32_t>(shift)) << 23) | ((mm & 0x3ff) << 13);
        }
    } else if (e == 31) {
        bits = m ? 0x7fc00000u : (sign | 0x7f800000u);
    } else {
        bits = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// f32 -> F16 bits as state-tensors.ts's f32ToF16: nearest-even for normals, infinity at and above
// the F16 range (NaN included), subnormals rounded half up (its Math.round).
inline uint16_t float_to_half(float v) {
    uint32_t x;
    std::memcpy(&x, &v, 4);
    const uint32_t sign = (x >> 16) & 0x8000;
    const int e = static_cast<int>((x >> 23) & 0xff) - 112;
    if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return static_cast<uint16_t>(sign);
        const uint32_t m = (x & 0x7fffff) | 0x800000;
        const int s = 14 - e;
        return static_cast<uint16_t>(sign | ((m + (1u << (s - 1))) >> s));
    }
    const uint32_t r = (static_cast<uint32_t>(e) << 10) | ((x & 0x7fffff) >> 13);
    const uint32_t rest = x & 0x1fff;
    return static_cast<uint16_t>(sign | (r + ((rest + (r & 1) + 0xfff) >> 13)));
}

// Per-thread working memory, reused from tensor to tensor.
struct Scratch {
    std::vector<uint32_t> tables;  // per context and slot: symbol | (freq - 1) << 8 | (slot - cum) << 20
    std::vector<uint8_t> contexts, symbols;
    std::vector<float> mean, row;
    std::vector<uint8_t> shift;
    std::vector<uint32_t> hi_at;
    std::vector<uint8_t> lo_mask;
    std::vector<double> cos, sin;
};

// One block's header, tables and stream.
struct Block {
    double step;
    const uint8_t * escapes;
    uint32_t escape_count;
    Span stream;
    size_t per_token;
};

Block read_block(Span body, uint32_t channels, Scratch & s) {
    Block b{};
    b.step = static_cast<double>(body.f32(0));
    s.mean.resize(channels);
    s.shift.resize(channels);
    s.hi_at.resize(channels);
    s.lo_mask.resize(channels);
    std::vector<uint8_t> row_contexts;
    row_contexts.reserve(2 * channels);
    bool used[CONTEXTS] = {};
    Span head = body.sub(4, 3 * static_cast<size_t>(channels));
    for (uint32_t j = 0; j < channels; j++) {
        s.mean[j] = half_to_float(head.u16(3 * j));
        const uint8_t c = head.u8(3 * j + 2);
        const int bucket = c & 15, shift = c >> 4;
        if (bucket >= BUCKETS || shift > MAX_SHIFT) corrupt("a channel class is out of range");
        s.shift[j] = static_cast<uint8_t>(shift);
        s.hi_at[j] = static_cast<uint32_t>(row_contexts.size());
        row_contexts.push_back(static_cast<uint8_t>(bucket));
        used[bucket] = true;
        if (shift) {
            row_contexts.push_back(static_cast<uint8_t>(BUCKETS + shift - 1));
            used[BUCKETS + shift - 1] = true;
        }
    }
    b.per_token = row_contexts.size();
    // A channel's low part is the symbol after its high part, masked to 0 when it has none.
    for (uint32_t j = 0; j < channels; j++) s.lo_mask[j] = s.shift[j] ? 0xff : 0;
    const size_t e = 4 + 3 * static_cast<size_t>(channels);
    b.escape_count = body.u32(e);
    b.escapes = body.sub(e + 4, 2 * static_cast<size_t>(b.escape_count)).p;
    size_t o = e + 4 + 2 * static_cast<size_t>(b.escape_count);
    s.tables.resize(static_cast<size_t>(CONTEXTS) * PROB);
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
        uint32_t * slot = s.tables.data() + static_cast<size_t>(c) * PROB;
        uint32_t filled = 0;
        for (uint32_t sym = lo; sym <= hi; sym++) {
            const uint32_t freq = f.u16(2 * (sym - lo));
            if (freq > PROB - filled) corrupt("a frequency table sums past 2^12");
            for (uint32_t i = 0; i < freq; i++) slot[filled + i] = sym | ((freq - 1) << 8) | (i << 20);
            filled += freq;
        }
        if (filled != PROB) corrupt("a frequency table does not sum to 2^12");
    }
    b.stream = body.from(o);
    if (b.stream.n < 8) corrupt("a rANS stream is truncated");
    // The contexts of CHUNK_ROWS rows, so a pass indexes them directly.
    s.contexts.resize(CHUNK_ROWS * b.per_token);
    for (size_t r = 0; r < CHUNK_ROWS; r++) std::copy(row_contexts.begin(), row_contexts.end(), s.contexts.begin() + static_cast<std::ptrdiff_t>(r * b.per_token));
    // One more: the last channel of the last row may read the slot after its row (masked).
    s.symbols.assign(CHUNK_ROWS * b.per_token + 1, 0);
    return b;
}

// Decodes n symbols (n even except at the block's end) with the two states; p is the stream cursor.
void rans_pass(const Block & b, const Scratch & s, uint32_t x[2], size_t & p, size_t n, uint8_t * out) {
    const uint32_t * tables = s.tables.data();
    const uint8_t * ctx = s.contexts.data();
    const uint8_t * in = b.stream.p;
    const size_t len = b.stream.n;
    uint32_t x0 = x[0], x1 = x[1];
    for (size_t k = 0; k < n; k += 2) {
        const uint32_t e0 = tables[(static_cast<uint32_t>(ctx[k]) << PROB_BITS) + (x0 & (PROB - 1))];
        out[k] = static_cast<uint8_t>(e0);
        x0 = (((e0 >> 8) & 0xfff) + 1) * (x0 >> PROB_BITS) + (e0 >> 20);
        while (x0 < LOW) {
            if (p >= len) corrupt("a rANS stream is truncated");
            x0 = (x0 << 8) | in[p++];
        }
        if (k + 1 == n) break;
        const uint32_t e1 = tables[(static_cast<uint32_t>(ctx[k + 1]) << PROB_BITS) + (x1 & (PROB - 1))];
        out[k + 1] = static_cast<uint8_t>(e1);
        x1 = (((e1 >> 8) & 0xfff) + 1) * (x1 >> PROB_BITS) + (e1 >> 20);
        while (x1 < LOW) {
            if (p >= len) corrupt("a rANS stream is truncated");
            x1 = (x1 << 8) | in[p++];
        }
    }
    x[0] = x0;
    x[1] = x1;
}

// The tensor being rebuilt: where its rows go and how they are finished.
struct Target {
    const KvDecodeJob & job;
    GainTable gains;
    const int8_t * gain_codes;  // nullptr: none
    int style;                  // 0 none, 1 neox, 2 norm
    uint32_t tokens, channels;
};

// RoPE angles of token t (rope.ts's ropeTables, one row at a time): a seed row where the position
// does not follow the previous token's, else the previous row advanced by the step angles.
void rope_row(const Target & t, uint32_t token, size_t & seed, Scratch & s) {
    const KvDecodeJob & j = t.job;
    const size_t pairs = j.pairs;
    const bool follows = token > 0 && static_cast<int64_t>(j.positions[token]) == static_cast<int64_t>(j.positions[token - 1]) + 1;
    if (!follows) {
        if (seed >= j.seed_count) throw std::runtime_error("KV codec: RoPE seeds missing for a tensor");
        const double * row = j.seeds + seed * 2 * pairs;
        std::copy(row, row + pairs, s.cos.begin());
        std::copy(row + pairs, row + 2 * pairs, s.sin.begin());
        seed++;
        return;
    }
    double * c = s.cos.data();
    double * sn = s.sin.data();
    for (size_t i = 0; i < pairs; i++) {
        const double pc = c[i], ps = sn[i];
        c[i] = pc * j.step_cos[i] - ps * j.step_sin[i];
        sn[i] = ps * j.step_cos[i] + pc * j.step_sin[i];
    }
}

// Gains, RoPE and F16 for the f32 row of `token` in s.row.
void finish_row(const Target & t, uint32_t token, size_t & seed, Scratch & s) {
    float * x = s.row.data();
    const uint32_t C = t.channels;
    if (t.gain_codes) {
        for (uint32_t j = 0; j < C; j++) x[j] = x[j] * t.gains[t.gain_codes[j] + 128];
    }
    if (t.style) {
        rope_row(t, token, seed, s);
        const size_t pairs = C >> 1;
        const size_t stride = t.style == 1 ? 1 : 2, offset = t.style == 1 ? pairs : 1;
        for (size_t i = 0; i < pairs; i++) {
            const size_t a = i * stride, b = a + offset;
            const double xa = x[a], xb = x[b], c = s.cos[i], sn = s.sin[i];
            x[a] = static_cast<float>(xa * c - xb * sn);
            x[b] = static_cast<float>(xb * c + xa * sn);
        }
    }
    uint16_t * out = t.job.out;
    if (t.job.token_axis == 0) {
        uint16_t * dst = out + static_cast<size_t>(token) * C;
        for (uint32_t j = 0; j < C; j++) dst[j] = float_to_half(x[j]);
    } else {
        for (uint32_t j = 0; j < C; j++) out[static_cast<size_t>(j) * t.tokens + token] = float_to_half(x[j]);
    }
}

// Decodes a block of `rows` token rows starting at token `first`.
void decode_block(Span body, const Target & t, uint32_t first, uint32_t rows, size_t & seed, Scratch & s) {
    const uint32_t C = t.channels;
    const Block b = read_block(body, C, s);
    uint32_t x[2] = {b.stream.u32(0), b.stream.u32(4)};
    size_t p = 8;
    uint32_t escape = 0;
    for (uint32_t r0 = 0; r0 < rows; r0 += CHUNK_ROWS) {
        const uint32_t n_rows = std::min<uint32_t>(static_cast<uint32_t>(CHUNK_ROWS), rows - r0);
        rans_pass(b, s, x, p, n_rows * b.per_token, s.symbols.data());
        for (uint32_t r = 0; r < n_rows; r++) {
            const uint8_t * sym = s.symbols.data() + static_cast<size_t>(r) * b.per_token;
            float * out = s.row.data();
            for (uint32_t j = 0; j < C; j++) {
                const int hi = sym[s.hi_at[j]];
                if (hi == ESC) {
                    if (escape >= b.escape_count) corrupt("more escapes than the block lists");
                    out[j] = half_to_float(static_cast<uint16_t>(b.escapes[2 * escape] | (b.escapes[2 * escape + 1] << 8)));
                    escape++;
                    continue;
                }
                const int q = (hi - RANGE) * (1 << s.shift[j]) + (sym[s.hi_at[j] + 1] & s.lo_mask[j]);
                out[j] = static_cast<float>(static_cast<double>(s.mean[j]) + static_cast<double>(q) * b.step);
            }
            finish_row(t, first + r0 + r, seed, s);
        }
    }
}

void decode_zero_rows(const Target & t, uint32_t from, size_t & seed, Scratch & s) {
    for (uint32_t token = from; token < t.tokens; token++) {
        std::fill(s.row.begin(), s.row.end(), 0.0f);
        finish_row(t, token, seed, s);
    }
}

// Head of a coded tensor: shape (checked against the job's), rope style and base.
int read_head(Span body, const KvDecodeJob & job, uint32_t channels) {
    if (body.u32(0) != job.rows || body.u32(4) != job.cols || body.u8(8) != job.token_axis) corrupt("a tensor's shape differs from its place in the state");
    const int style = body.u8(9);
    if (style > 2) corrupt("unknown RoPE style");
    if (style && (channels % 2 != 0 || job.pairs != channels / 2)) throw std::runtime_error("KV codec: RoPE tables missing for a key tensor");
    return style;
}

void decode_tiered(Span body, Target & t, Scratch & s) {
    t.style = read_head(body, t.job, t.channels);
    const uint32_t segments = body.u8(14);
    size_t o = 15 + 8 * static_cast<size_t>(segments);
    uint32_t from = 0;
    size_t seed = 0;
    for (uint32_t i = 0; i < segments; i++) {
        const uint32_t rows = body.u32(15 + 8 * i), len = body.u32(15 + 8 * i + 4);
        if (rows > t.tokens - from) corrupt("segments hold more tokens than the tensor");
        decode_block(body.sub(o, len), t, from, rows, seed, s);
        from += rows;
        o += len;
    }
    decode_zero_rows(t, from, seed, s);
}

void decode_qpre(Span body, Target & t, Scratch & s) {
    t.style = read_head(body, t.job, t.channels);
    const uint32_t recent = body.u32(14), bulk_len = body.u32(18);
    if (recent > t.tokens) corrupt("more recent tokens than the tensor holds");
    size_t seed = 0;
    decode_block(body.sub(22, bulk_len), t, 0, t.tokens - recent, seed, s);
    if (recent > 0) decode_block(body.from(22 + static_cast<size_t>(bulk_len)), t, t.tokens - recent, recent, seed, s);
}

void decode_sink(Span body, Target & t, Scratch & s) {
    const size_t end = 4 + static_cast<size_t>(body.u32(0));
    const uint32_t count = body.u32(end);
    const size_t size = 4 + 2 * static_cast<size_t>(t.channels);
    if (count > t.tokens) corrupt("more sink rows than tokens");
    Span sinks = body.sub(end + 4, count * size);
    const size_t g = end + 4 + count * size;
    const uint32_t gains = body.u32(g);
    if (gains != 0 && gains != t.channels) corrupt("gain codes are not one per channel");
    t.gain_codes = gains ? reinterpret_cast<const int8_t *>(body.sub(g + 4, gains).p) : nullptr;
    if (gains && !t.gains) throw std::runtime_error("KV codec: gain table missing");
    decode_tiered(body.sub(4, end - 4), t, s);
    for (uint32_t r = 0; r < count; r++) {
        const uint32_t i = sinks.u32(r * size);
        if (i >= t.tokens) corrupt("a sink row is beyond the tensor");
        for (uint32_t j = 0; j < t.channels; j++) {
            const uint16_t h = sinks.u16(r * size + 4 + 2 * j);
            t.job.out[t.job.token_axis == 0 ? static_cast<size_t>(i) * t.channels + j : static_cast<size_t>(j) * t.tokens + i] = h;
        }
    }
}

void decode_with(const KvDecodeJob & job, GainTable gains, Scratch & s) {
    Target t{job, gains, nullptr, 0, job.token_axis == 0 ? job.rows : job.cols, job.token_axis == 0 ? job.cols : job.rows};
    s.row.assign(t.channels, 0.0f);
    s.cos.assign(job.pairs, 0.0);
    s.sin.assign(job.pairs, 0.0);
    Span body{job.body, job.body_len};
    if (job.kind == 3) decode_sink(body, t, s);
    else if (job.kind == 1) decode_qpre(body, t, s);
    else throw std::runtime_error("KV codec: not a coded tensor kind: " + std::to_string(job.kind));
}

}  // namespace

void kv_decode_tensor(const KvDecodeJob & job, GainTable gains) {
    Scratch s;
    decode_with(job, gains, s);
}

void kv_decode_all(const KvDecodeJob * jobs, size_t n, GainTable gains, int threads) {
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex mu;
    std::string error;
    auto work = [&] {
        Scratch s;
        for (size_t i = next.fetch_add(1); i < n && !failed.load(); i = next.fetch_add(1)) {
            try {
                decode_with(jobs[i], gains, s);
            } catch (const std::exception & e) {
                std::lock_guard<std::mutex> lock(mu);
                if (!failed.exchange(true)) error = e.what();
            }
        }
    };
    std::vector<std::thread> pool;
    const size_t extra = std::min(n, static_cast<size_t>(std::max(threads, 1))) - (n > 0 ? 1 : 0);
    for (size_t i = 0; i < extra; i++) pool.emplace_back(work);
    work();
    for (std::thread & t : pool) t.join();
    if (failed.load()) throw std::runtime_error(error);
}

}  // namespace llmfleet
