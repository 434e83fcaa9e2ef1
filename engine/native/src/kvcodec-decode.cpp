// The qpre-family KV decoder (format and exactness rules in kvcodec-decode.h). A tensor decodes a
// chunk of token rows at a time: the rANS pass writes the chunk's symbols, then each row is
// rebuilt (values, gains, RoPE) and written as F16 straight into the rebuilt state. Every read of
// the body is bounds-checked: a corrupt or truncated body throws, it never reads past the buffer.
#include "kvcodec-decode.h"

#include "kvcodec-kernels.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

namespace llmfleet {

namespace {

using kvcodec::corrupt;
using kvcodec::half_to_float;
using kvcodec::PROB;
using kvcodec::PROB_BITS;
using kvcodec::Span;

constexpr int RANGE = 100;
constexpr int ESC = 2 * RANGE + 1;
constexpr int BUCKETS = 14;
constexpr int MAX_SHIFT = 7;
constexpr int CONTEXTS = BUCKETS + MAX_SHIFT;
// The row loops (values, RoPE, F16) also in an AVX2 version, chosen at load time where the CPU has it.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define LLMFLEET_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LLMFLEET_VECTOR_CLONES
#endif
// Token rows per rANS pass (even, so every pass starts on state 0).
constexpr size_t CHUNK_ROWS = 16;

// Per-thread working memory, reused from tensor to tensor.
struct Scratch {
    std::vector<uint8_t> table_symbol;  // kvcodec::RansTables
    std::vector<uint32_t> table_freq_cum;
    std::vector<uint8_t> contexts, symbols;
    std::vector<float> mean, rows, gain;
    std::vector<uint8_t> shift;
    std::vector<uint32_t> hi_at;
    // Shifted blocks: where each symbol of a row goes in `parts` (high parts [0, C), low parts [C, 2C),
    // zero for unshifted channels), and each channel's 2^shift.
    std::vector<uint32_t> part_of;
    std::vector<uint8_t> parts;
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

// Per-channel means and classes; the symbol layout of a token row.
void read_channels(Span head, uint32_t channels, Block & b, Scratch & s, bool used[CONTEXTS]) {
    std::vector<uint8_t> row;
    row.reserve(2 * channels);
    b.shifted = false;
    for (uint32_t j = 0; j < channels; j++) {
        s.mean[j] = half_to_float(head.u16(3 * j));
        const uint8_t c = head.u8(3 * j + 2);
        const int bucket = c & 15, shift = c >> 4;
        if (bucket >= BUCKETS || shift > MAX_SHIFT) corrupt("a channel class is out of range");
        s.shift[j] = static_cast<uint8_t>(shift);
        s.scale[j] = static_cast<double>(1 << shift);
        s.hi_at[j] = static_cast<uint32_t>(row.size());
        s.part_of[row.size()] = j;
        if (shift) s.part_of[row.size() + 1] = channels + j;
        row.push_back(static_cast<uint8_t>(bucket));
        used[bucket] = true;
        if (shift) {
            row.push_back(static_cast<uint8_t>(BUCKETS + shift - 1));
            used[BUCKETS + shift - 1] = true;
            b.shifted = true;
        }
    }
    b.per_token = row.size();
    // The contexts of CHUNK_ROWS rows, so a pass indexes them directly.
    s.contexts.resize(CHUNK_ROWS * b.per_token);
    for (size_t r = 0; r < CHUNK_ROWS; r++) std::copy(row.begin(), row.end(), s.contexts.begin() + static_cast<std::ptrdiff_t>(r * b.per_token));
    // One more symbol: the last channel of the last row may read the slot after its row (masked).
    s.symbols.assign(CHUNK_ROWS * b.per_token + 1, 0);
}

// The frequency tables of the contexts, as decode tables; returns the offset after them.
size_t read_tables(Span body, size_t o, const bool used[CONTEXTS], Scratch & s) {
    s.table_symbol.resize(static_cast<size_t>(CONTEXTS) * PROB);
    s.table_freq_cum.resize(static_cast<size_t>(CONTEXTS) * 256);
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
        uint8_t * slot = s.table_symbol.data() + static_cast<size_t>(c) * PROB;
        uint32_t * fc = s.table_freq_cum.data() + static_cast<size_t>(c) * 256;
        uint32_t filled = 0;
        for (uint32_t sym = lo; sym <= hi; sym++) {
            const uint32_t freq = f.u16(2 * (sym - lo));
            if (freq > PROB - filled) corrupt("a frequency table sums past 2^12");
            std::memset(slot + filled, static_cast<int>(sym), freq);
            fc[sym] = freq | (filled << 16);
            filled += freq;
        }
        if (filled != PROB) corrupt("a frequency table does not sum to 2^12");
    }
    return o;
}

Block read_block(Span body, uint32_t channels, Scratch & s) {
    Block b{};
    b.step = static_cast<double>(body.f32(0));
    s.mean.resize(channels);
    s.shift.resize(channels);
    s.hi_at.resize(channels);
    s.scale.resize(channels);
    s.part_of.resize(2 * static_cast<size_t>(channels));
    s.parts.assign(2 * static_cast<size_t>(channels), 0);
    bool used[CONTEXTS] = {};
    read_channels(body.sub(4, 3 * static_cast<size_t>(channels)), channels, b, s, used);
    const size_t e = 4 + 3 * static_cast<size_t>(channels);
    b.escape_count = body.u32(e);
    b.escapes = body.sub(e + 4, 2 * static_cast<size_t>(b.escape_count)).p;
    b.stream = body.from(read_tables(body, e + 4 + 2 * static_cast<size_t>(b.escape_count), used, s));
    return b;
}

// The tensor being rebuilt: where its rows go and how they are finished.
struct Target {
    const KvDecodeJob & job;
    bool gains;  // s.gain holds the channels' factors
    int style;   // 0 none, 1 neox, 2 norm
    uint32_t tokens, channels;
};

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

// Gains, RoPE and F16 for `n` f32 rows (s.rows) from token `first`, written into the tensor.
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
        kvcodec::floats_to_halves(s.rows.data(), out + static_cast<size_t>(first) * C, static_cast<size_t>(n) * C);
        return;
    }
    // Transposed: each channel's n tokens are contiguous in the tensor.
    uint16_t * h = s.halves.data();
    kvcodec::floats_to_halves(s.rows.data(), h, static_cast<size_t>(n) * C);
    kvcodec::write_transposed(h, n, C, out, t.tokens, first);
}

// Values of a row whose channels all have one symbol: mean + (symbol - RANGE) * step, escapes after.
LLMFLEET_VECTOR_CLONES void values_plain(const uint8_t * __restrict sym, const float * __restrict mean, double step, float * __restrict x, uint32_t C, bool & escaped) {
    uint32_t esc = 0;
    for (uint32_t j = 0; j < C; j++) {
        esc |= static_cast<uint32_t>(sym[j] == ESC);
        x[j] = static_cast<float>(static_cast<double>(mean[j]) + static_cast<double>(static_cast<int>(sym[j]) - RANGE) * step);
    }
    escaped = esc != 0;
}

// Values of a row with shifted channels: q = (high - RANGE) << shift | low, in doubles (exact:
// small integers), once the row's symbols are sorted into high and low parts.
LLMFLEET_VECTOR_CLONES void values_shifted(const uint8_t * sym, size_t per_token, Scratch & s, double step, float * __restrict x, uint32_t C, bool & escaped) {
    uint8_t * __restrict parts = s.parts.data();
    const uint32_t * __restrict part_of = s.part_of.data();
    for (size_t i = 0; i < per_token; i++) parts[part_of[i]] = sym[i];
    const uint8_t * __restrict lo = parts + C;
    const float * __restrict mean = s.mean.data();
    const double * __restrict scale = s.scale.data();
    uint32_t esc = 0;
    for (uint32_t j = 0; j < C; j++) {
        esc |= static_cast<uint32_t>(parts[j] == ESC);
        const double q = static_cast<double>(static_cast<int>(parts[j]) - RANGE) * scale[j] + static_cast<double>(lo[j]);
        x[j] = static_cast<float>(static_cast<double>(mean[j]) + q * step);
    }
    escaped = esc != 0;
}

// A run of token rows coded as one block.
struct Segment {
    Span body;
    uint32_t first, rows;
};

// Head of a coded tensor: shape (checked against the job's), rope style.
int read_head(Span body, const KvDecodeJob & job, uint32_t channels) {
    if (body.u32(0) != job.rows || body.u32(4) != job.cols || body.u8(8) != job.token_axis) corrupt("a tensor's shape differs from its place in the state");
    const int style = body.u8(9);
    if (style > 2) corrupt("unknown RoPE style");
    if (style && (channels % 2 != 0 || job.pairs != channels / 2)) throw std::runtime_error("KV codec: RoPE tables missing for a key tensor");
    return style;
}

// One tensor being decoded, a chunk of rows at a time, so that a thread can run the rANS passes of
// two tensors together (kvcodec::rans_two): start, then prepare / (rANS) / finish_chunk until
// prepare says there is no chunk left, then done.
class Lane {
public:
    explicit Lane(GainTable gains) : gains_(gains) {}

    void start(const KvDecodeJob & job) {
        t_.emplace(Target{job, false, 0, job.token_axis == 0 ? job.rows : job.cols, job.token_axis == 0 ? job.cols : job.rows});
        s_.rows.assign(CHUNK_ROWS * t_->channels, 0.0f);
        s_.halves.resize(CHUNK_ROWS * t_->channels);
        s_.gain.resize(t_->channels);
        s_.cos.assign(job.pairs, 0.0);
        s_.sin.assign(job.pairs, 0.0);
        segments_.clear();
        next_segment_ = 0;
        block_rows_ = row_ = 0;
        seed_ = 0;
        sinks_ = {nullptr, 0};
        sink_count_ = 0;
        Span body{job.body, job.body_len};
        if (job.kind == 3) start_sink(body);
        else if (job.kind == 1) start_qpre(body);
        else throw std::runtime_error("KV codec: not a coded tensor kind: " + std::to_string(job.kind));
    }

    // Readies the next chunk's rANS pass; its symbol count in n. False: the tensor's blocks are done.
    bool prepare(size_t & n) {
        while (row_ >= block_rows_) {
            if (next_segment_ == segments_.size()) return false;
            const Segment & seg = segments_[next_segment_++];
            block_ = read_block(seg.body, t_->channels, s_);
            // Padding for the longest pass: CHUNK_ROWS rows of two symbols per channel.
            kvcodec::rans_start(rans, block_.stream, stream_, 2 * (2 * CHUNK_ROWS * t_->channels) + 2);
            rans.tables = {s_.table_symbol.data(), s_.table_freq_cum.data()};
            rans.ctx = s_.contexts.data();
            rans.out = s_.symbols.data();
            block_first_ = seg.first;
            block_rows_ = seg.rows;
            row_ = 0;
            escape_ = 0;
        }
        // About CHUNK_ROWS rows of single-symbol channels, so that two lanes' passes are about as long
        // (what one runs beyond the other runs alone); even, so every pass starts on state 0.
        const size_t rows = std::max<size_t>(2, (CHUNK_ROWS * t_->channels / block_.per_token) & ~static_cast<size_t>(1));
        chunk_ = static_cast<uint32_t>(std::min<size_t>(rows, block_rows_ - row_));
        n = chunk_ * block_.per_token;
        return true;
    }

    // Values, gains, RoPE and F16 of the chunk whose symbols the rANS pass wrote.
    void finish_chunk() {
        const uint32_t C = t_->channels;
        for (uint32_t r = 0; r < chunk_; r++) {
            const uint8_t * sym = s_.symbols.data() + static_cast<size_t>(r) * block_.per_token;
            float * x = s_.rows.data() + static_cast<size_t>(r) * C;
            bool escaped = false;
            if (block_.shifted) values_shifted(sym, block_.per_token, s_, block_.step, x, C, escaped);
            else values_plain(sym, s_.mean.data(), block_.step, x, C, escaped);
            for (uint32_t j = 0; escaped && j < C; j++) {
                if (sym[s_.hi_at[j]] != ESC) continue;
                if (escape_ >= block_.escape_count) corrupt("more escapes than the block lists");
                x[j] = half_to_float(static_cast<uint16_t>(block_.escapes[2 * escape_] | (block_.escapes[2 * escape_ + 1] << 8)));
                escape_++;
            }
        }
        finish_rows(*t_, block_first_ + row_, chunk_, seed_, s_);
        row_ += chunk_;
    }

    // Rows no block covered (zero, finished like the rest), then the exact sink rows.
    void done() {
        const Target & t = *t_;
        const uint32_t covered = segments_.empty() ? 0 : segments_.back().first + segments_.back().rows;
        for (uint32_t r0 = covered; r0 < t.tokens; r0 += CHUNK_ROWS) {
            const uint32_t n = std::min<uint32_t>(static_cast<uint32_t>(CHUNK_ROWS), t.tokens - r0);
            std::fill(s_.rows.begin(), s_.rows.end(), 0.0f);
            finish_rows(t, r0, n, seed_, s_);
        }
        const size_t size = 4 + 2 * static_cast<size_t>(t.channels);
        for (uint32_t r = 0; r < sink_count_; r++) {
            const uint32_t i = sinks_.u32(r * size);
            if (i >= t.tokens) corrupt("a sink row is beyond the tensor");
            for (uint32_t j = 0; j < t.channels; j++) {
                const uint16_t h = sinks_.u16(r * size + 4 + 2 * j);
                t.job.out[t.job.token_axis == 0 ? static_cast<size_t>(i) * t.channels + j : static_cast<size_t>(j) * t.tokens + i] = h;
            }
        }
    }

    kvcodec::RansLane rans{};

private:
    // Tiered body (inside a sink tensor): segments oldest first.
    void start_tiered(Span body) {
        t_->style = read_head(body, t_->job, t_->channels);
        const uint32_t count = body.u8(14);
        size_t o = 15 + 8 * static_cast<size_t>(count);
        uint32_t from = 0;
        for (uint32_t i = 0; i < count; i++) {
            const uint32_t rows = body.u32(15 + 8 * i), len = body.u32(15 + 8 * i + 4);
            if (rows > t_->tokens - from) corrupt("segments hold more tokens than the tensor");
            segments_.push_back({body.sub(o, len), from, rows});
            from += rows;
            o += len;
        }
    }

    void start_qpre(Span body) {
        t_->style = read_head(body, t_->job, t_->channels);
        const uint32_t recent = body.u32(14), bulk_len = body.u32(18);
        if (recent > t_->tokens) corrupt("more recent tokens than the tensor holds");
        segments_.push_back({body.sub(22, bulk_len), 0, t_->tokens - recent});
        if (recent > 0) segments_.push_back({body.from(22 + static_cast<size_t>(bulk_len)), t_->tokens - recent, recent});
    }

    void start_sink(Span body) {
        const size_t end = 4 + static_cast<size_t>(body.u32(0));
        const uint32_t count = body.u32(end);
        const size_t size = 4 + 2 * static_cast<size_t>(t_->channels);
        if (count > t_->tokens) corrupt("more sink rows than tokens");
        sinks_ = body.sub(end + 4, count * size);
        sink_count_ = count;
        const size_t g = end + 4 + count * size;
        const uint32_t gains = body.u32(g);
        if (gains != 0 && gains != t_->channels) corrupt("gain codes are not one per channel");
        if (gains) {
            if (!gains_) throw std::runtime_error("KV codec: gain table missing");
            const int8_t * codes = reinterpret_cast<const int8_t *>(body.sub(g + 4, gains).p);
            for (uint32_t j = 0; j < t_->channels; j++) s_.gain[j] = gains_[codes[j] + 128];
            t_->gains = true;
        }
        start_tiered(body.sub(4, end - 4));
    }

    GainTable gains_;
    std::optional<Target> t_;
    Scratch s_;
    std::vector<Segment> segments_;
    std::vector<uint8_t> stream_;  // the block's rANS stream, padded (kvcodec::RansLane)
    size_t next_segment_ = 0;
    Block block_{};
    uint32_t block_first_ = 0, block_rows_ = 0, row_ = 0, chunk_ = 0, escape_ = 0;
    size_t seed_ = 0;
    Span sinks_{nullptr, 0};
    uint32_t sink_count_ = 0;
};

// A thread's share: two lanes, refilled from the shared job counter, their passes run together.
void work(const KvDecodeJob * jobs, size_t n, std::atomic<size_t> & next, const std::atomic<bool> & failed, GainTable gains) {
    Lane lanes[2] = {Lane(gains), Lane(gains)};
    bool active[2] = {false, false};
    size_t count[2] = {0, 0};
    auto take = [&](int i) {
        const size_t job = failed.load() ? n : next.fetch_add(1);
        active[i] = job < n;
        if (active[i]) lanes[i].start(jobs[job]);
    };
    take(0);
    take(1);
    for (;;) {
        for (int i = 0; i < 2; i++) {
            while (active[i] && !lanes[i].prepare(count[i])) {
                lanes[i].done();
                take(i);
            }
        }
        if (active[0] && active[1]) kvcodec::rans_two(lanes[0].rans, count[0], lanes[1].rans, count[1]);
        else if (active[0] || active[1]) kvcodec::rans_range(lanes[active[0] ? 0 : 1].rans, 0, count[active[0] ? 0 : 1]);
        else return;
        for (int i = 0; i < 2; i++) {
            if (active[i]) lanes[i].finish_chunk();
        }
    }
}

}  // namespace

void kv_decode_all(const KvDecodeJob * jobs, size_t n, GainTable gains, int threads) {
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex mu;
    std::string error;
    auto run = [&] {
        try {
            work(jobs, n, next, failed, gains);
        } catch (const std::exception & e) {
            std::lock_guard<std::mutex> lock(mu);
            if (!failed.exchange(true)) error = e.what();
        }
    };
    std::vector<std::thread> pool;
    // Two tensors per thread at a time: a thread only when it has two to work on.
    const size_t extra = std::min(static_cast<size_t>(std::max(threads, 1)), (n + 1) / 2) - (n > 0 ? 1 : 0);
    for (size_t i = 0; i < extra; i++) pool.emplace_back(run);
    run();
    for (std::thread & t : pool) t.join();
    if (failed.load()) throw std::runtime_error(error);
}

}  // namespace llmfleet
