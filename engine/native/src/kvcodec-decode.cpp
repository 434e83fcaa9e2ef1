// The qpre-family KV decoder (format and exactness rules in kvcodec-decode.h). A tensor decodes a
// chunk of token rows at a time: the rANS pass writes the chunk's symbols, then each row is
// rebuilt (values, gains, RoPE: kvcodec-block.cpp) and written as F16 straight into the rebuilt
// state. A thread decodes two tensors at once, their rANS passes interleaved. Every read of a body
// is bounds-checked: a corrupt or truncated body throws, it never reads past the buffer.
//
// Threads: a call's tensors (a load passes every tensor of CODED_BATCH blocks in one call) are one
// queue, largest first, that the calling thread and the workers of a pool drain. The pool is kept
// from call to call, one per calling thread (the JavaScript main thread, a codec worker thread),
// so a load's calls start no threads and two callers never share one.
#include "kvcodec-decode.h"

#include "fork-join.h"
#include "kvcodec-block.h"
#include "kvcodec-wide.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <vector>

namespace llmfleet {

namespace {

using kvcodec::Block;
using kvcodec::CHUNK_ROWS;
using kvcodec::corrupt;
using kvcodec::ESC;
using kvcodec::finish_rows;
using kvcodec::half_to_float;
using kvcodec::read_block;
using kvcodec::Scratch;
using kvcodec::Span;
using kvcodec::Target;
using kvcodec::values_plain;
using kvcodec::values_shifted;

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
    void start(const KvDecodeJob & job, GainTable gains) {
        gains_ = gains;
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
        wide_ = job.kind == 4;
        Span body{job.body, job.body_len};
        if (job.kind == 3 || job.kind == 4) start_sink(body);
        else if (job.kind == 1) start_qpre(body);
        else throw std::runtime_error("KV codec: not a coded tensor kind: " + std::to_string(job.kind));
    }

    // Readies the next chunk's rANS pass; its symbol count in n (0: the chunk's symbols are decoded
    // already, a wide block's all at its start). False: the tensor's blocks are done.
    bool prepare(size_t & n) {
        while (row_ >= block_rows_) {
            if (next_segment_ == segments_.size()) return false;
            const Segment & seg = segments_[next_segment_++];
            block_ = read_block(seg.body, t_->channels, s_, wide_);
            if (wide_) {
                decode_wide(seg.rows);
            } else {
                // Padding for the longest pass: CHUNK_ROWS rows of two symbols per channel.
                kvcodec::rans_start(rans, block_.stream, stream_, 2 * (2 * CHUNK_ROWS * t_->channels) + 2);
                rans.tables = s_.tables.data();
                rans.sym = s_.symbols.data();
            }
            block_first_ = seg.first;
            block_rows_ = seg.rows;
            row_ = 0;
            escape_ = 0;
        }
        // About CHUNK_ROWS rows of single-symbol channels, so that two lanes' passes are about as long
        // (what one runs beyond the other runs alone); even, so every pass starts on state 0.
        const size_t rows = std::max<size_t>(2, (CHUNK_ROWS * t_->channels / block_.per_token) & ~static_cast<size_t>(1));
        chunk_ = static_cast<uint32_t>(std::min<size_t>(rows, block_rows_ - row_));
        if (wide_) {
            n = 0;
            return true;
        }
        n = chunk_ * block_.per_token;
        // The pass decodes the symbols over their contexts.
        std::memcpy(s_.symbols.data(), s_.contexts.data(), n);
        return true;
    }

    // Values, gains, RoPE and F16 of the chunk whose symbols the rANS pass wrote.
    void finish_chunk() {
        const uint32_t C = t_->channels;
        const uint8_t * symbols = wide_ ? s_.block_symbols.data() + static_cast<size_t>(row_) * block_.per_token : s_.symbols.data();
        for (uint32_t r = 0; r < chunk_; r++) {
            const uint8_t * sym = symbols + static_cast<size_t>(r) * block_.per_token;
            float * x = s_.rows.data() + static_cast<size_t>(r) * C;
            bool escaped = false;
            if (block_.shifted) values_shifted(sym, s_, block_.step, x, C, escaped);
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
                t.job.out[t.job.token_axis == 0 ? static_cast<size_t>(i) * t.channels + j : static_cast<size_t>(j) * t.job.stride() + i] = h;
            }
        }
    }

    kvcodec::RansLane rans{};

private:
    // A wide block's symbols, all `rows` rows of them, in one pass (kvcodec-wide.h).
    void decode_wide(uint32_t rows) {
        const size_t per = block_.per_token, n = per * rows;
        s_.block_contexts.resize(n);
        for (size_t r = 0; r < rows; r++) std::memcpy(s_.block_contexts.data() + r * per, s_.contexts.data(), per);
        s_.block_symbols.resize(n);
        kvcodec::wide_decode(block_.stream, s_.block_contexts.data(), n, s_.tables.data(), s_.block_symbols.data(), s_.stream);
    }

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

    GainTable gains_ = nullptr;
    bool wide_ = false;  // kind 4: blocks carry the wide rANS stream
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

// A thread's share: two lanes, refilled from the shared queue (job order[next]), their passes run
// together. The lanes are the thread's own and kept from call to call, so their scratch (decode
// tables, a block's stream, a chunk's rows: a few hundred KB) is allocated once per thread.
void work(const KvDecodeJob * jobs, const uint32_t * order, size_t n, std::atomic<size_t> & next, const std::atomic<bool> & failed, GainTable gains) {
    thread_local Lane lanes[2];
    bool active[2] = {false, false};
    size_t count[2] = {0, 0};
    auto take = [&](int i) {
        const size_t k = failed.load() ? n : next.fetch_add(1);
        active[i] = k < n;
        if (active[i]) lanes[i].start(jobs[order[k]], gains);
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
        if (!active[0] && !active[1]) return;
        // A lane with no symbols to decode (a wide block's) sits the pass out.
        const bool pass[2] = {active[0] && count[0] > 0, active[1] && count[1] > 0};
        if (pass[0] && pass[1]) kvcodec::rans_two(lanes[0].rans, count[0], lanes[1].rans, count[1]);
        else if (pass[0] || pass[1]) kvcodec::rans_range(lanes[pass[0] ? 0 : 1].rans, 0, count[pass[0] ? 0 : 1]);
        for (int i = 0; i < 2; i++) {
            if (active[i]) lanes[i].finish_chunk();
        }
    }
}

// The calling thread's decode pool with at least `workers` workers: made on the first call with
// work for two threads, sized by its thread count, remade larger when a call asks for more (a call
// that asks for fewer runs fewer tasks on it).
ForkJoin & decode_pool(int32_t workers) {
    thread_local std::unique_ptr<ForkJoin> pool;
    if (!pool || pool->workers() < workers) pool = std::make_unique<ForkJoin>(workers);
    return *pool;
}

// Job indexes, most values first (ties in call order): the last tensors taken are the small ones,
// so no thread is left decoding a large tensor alone while the others wait.
std::vector<uint32_t> largest_first(const KvDecodeJob * jobs, size_t n) {
    std::vector<uint32_t> order(n);
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [jobs](uint32_t a, uint32_t b) {
        return static_cast<uint64_t>(jobs[a].rows) * jobs[a].cols > static_cast<uint64_t>(jobs[b].rows) * jobs[b].cols;
    });
    return order;
}

}  // namespace

void kv_decode_all(const KvDecodeJob * jobs, size_t n, GainTable gains, int threads) {
    const std::vector<uint32_t> order = largest_first(jobs, n);
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex mu;
    std::string error;
    // A task is one thread's work loop over the queue; it never throws (ForkJoin's workers cannot).
    auto task = [&](int32_t) {
        try {
            work(jobs, order.data(), n, next, failed, gains);
        } catch (const std::exception & e) {
            std::lock_guard<std::mutex> lock(mu);
            if (!failed.exchange(true)) error = e.what();
        } catch (...) {
            std::lock_guard<std::mutex> lock(mu);
            if (!failed.exchange(true)) error = "KV codec: decoding failed";
        }
    };
    // Two tensors per thread at a time: a thread only when it has two to work on.
    const int32_t tasks = static_cast<int32_t>(std::min(static_cast<size_t>(std::max(threads, 1)), std::max<size_t>((n + 1) / 2, 1)));
    if (tasks == 1) task(0);
    else decode_pool(std::max(threads, 1) - 1).run(tasks, task);
    if (failed.load()) throw std::runtime_error(error);
}

}  // namespace llmfleet
