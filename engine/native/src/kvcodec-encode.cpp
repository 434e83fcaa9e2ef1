// The qpre-family KV encoder (kvcodec-encode.h): a tensor is prepared as qpre.ts's prepare does
// (token-major f32, sink rows filled with the other rows' means, keys un-rotated by the candidate
// with the least summed log spread, channels scaled by their gains), then each segment is coded as
// a block (qpre-block.ts): channel means and classes, quantisation, frequency tables, rANS.
#include "kvcodec-encode.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "kvcodec-block.h"
#include "kvcodec-wide.h"

namespace llmfleet {

namespace {

using kvcodec::BUCKETS;
using kvcodec::CONTEXTS;
using kvcodec::ESC;
using kvcodec::float_to_half;
using kvcodec::half_to_float;
using kvcodec::MAX_SHIFT;
using kvcodec::PROB;
using kvcodec::PROB_BITS;
using kvcodec::RANGE;
constexpr double WIDE = 16;

// JavaScript's Math.round: the nearest integer, halves toward +infinity.
double js_round(double v) {
    const double r = std::floor(v);
    // Branch-free: a quantiser's halves fall either way unpredictably. Infinities and NaN stay.
    return r + static_cast<double>(v - r >= 0.5);
}

// JavaScript's ToInt32 of an integral double (what `q >> shift` converts q with).
int32_t js_int32(double v) {
    if (v > -2147483648.0 && v < 2147483648.0) return static_cast<int32_t>(v);
    if (!std::isfinite(v)) return 0;
    const double m = std::fmod(std::trunc(v), 4294967296.0);
    return static_cast<int32_t>(static_cast<uint32_t>(static_cast<int64_t>(m < 0 ? m + 4294967296.0 : m)));
}

// JavaScript's store of an integral double into a Uint8Array (ToUint8: modulo 2^8).
uint8_t js_uint8(double v) {
    if (!std::isfinite(v)) return 0;
    const double m = std::fmod(std::trunc(v), 256.0);
    return static_cast<uint8_t>(static_cast<int>(m < 0 ? m + 256 : m));
}

uint16_t double_to_half(double v) { return float_to_half(static_cast<float>(v)); }

void put_u32(std::vector<uint8_t> & b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

void put_f32(std::vector<uint8_t> & b, size_t at, float f) {
    uint32_t v;
    std::memcpy(&v, &f, 4);
    put_u32(b, at, v);
}

// Per-channel mean and standard deviation of token-major rows (qpre-block.ts's channelMoments).
void moments(const float * x, size_t n, uint32_t C, std::vector<double> & mean, std::vector<double> & sd) {
    std::vector<double> sum(C, 0.0), sum2(C, 0.0);
    for (size_t k = 0, j = 0; k < n; k++, j = j + 1 == C ? 0 : j + 1) {
        const double v = x[k];
        sum[j] = sum[j] + v;
        sum2[j] = sum2[j] + v * v;
    }
    const double tokens = static_cast<double>(n / C);
    mean.resize(C);
    sd.resize(C);
    for (uint32_t j = 0; j < C; j++) {
        mean[j] = sum[j] / tokens;
        sd[j] = std::sqrt(std::max(sum2[j] / tokens - mean[j] * mean[j], 0.0));
    }
}

double sum_log(const std::vector<double> & sd) {
    double a = 0;
    for (double v : sd) a = a + std::log(v + 1e-6);
    return a;
}

// Rotates every row by -angle (rope.ts's rotateRows with direction -1) with a candidate's angles.
void unrotate(float * x, size_t tokens, uint32_t C, const int32_t * positions, const KvRopeCandidate & r) {
    const size_t pairs = C >> 1;
    std::vector<double> c(pairs), s(pairs);
    size_t seed = 0;
    const size_t stride = r.style == 1 ? 1 : 2, offset = r.style == 1 ? pairs : 1;
    for (size_t t = 0; t < tokens; t++) {
        const bool follows = t > 0 && static_cast<int64_t>(positions[t]) == static_cast<int64_t>(positions[t - 1]) + 1;
        if (!follows) {
            if (seed >= r.seed_count) throw std::runtime_error("KV codec: RoPE seeds missing for a candidate");
            std::copy(r.seeds + seed * 2 * pairs, r.seeds + seed * 2 * pairs + pairs, c.begin());
            std::copy(r.seeds + seed * 2 * pairs + pairs, r.seeds + (seed + 1) * 2 * pairs, s.begin());
            seed++;
        } else {
            for (size_t i = 0; i < pairs; i++) {
                const double pc = c[i], ps = s[i];
                c[i] = pc * r.step_cos[i] - ps * r.step_sin[i];
                s[i] = ps * r.step_cos[i] + pc * r.step_sin[i];
            }
        }
        float * row = x + t * 2 * pairs;
        for (size_t i = 0; i < pairs; i++) {
            const size_t a = i * stride, b = a + offset;
            const double xa = row[a], xb = row[b], sn = -1 * s[i];
            row[a] = static_cast<float>(xa * c[i] - xb * sn);
            row[b] = static_cast<float>(xb * c[i] + xa * sn);
        }
    }
}

struct Prepared {
    std::vector<float> x;  // tokens x channels, token-major
    const KvRopeCandidate * rope = nullptr;
    double rms = 1;
};

// qpre.ts's prepare: toRows, fillRows, unrope, scaleChannels, the RMS channel spread.
Prepared prepare(const KvEncodeJob & job, uint32_t tokens, uint32_t C, EncodeGainTable gains) {
    Prepared p;
    p.x.resize(static_cast<size_t>(tokens) * C);
    float * x = p.x.data();
    if (job.token_axis == 0) {
        for (size_t k = 0; k < p.x.size(); k++) x[k] = half_to_float(job.data[k]);
    } else {
        for (size_t j = 0, k = 0; j < job.rows; j++)
            for (size_t i = 0; i < job.cols; i++, k++) x[i * job.rows + j] = half_to_float(job.data[k]);
    }
    if (!job.exact_rows.empty()) {
        std::vector<double> sum(C, 0.0);
        for (size_t k = 0, j = 0; k < p.x.size(); k++, j = j + 1 == C ? 0 : j + 1) sum[j] = sum[j] + x[k];
        for (uint32_t r : job.exact_rows)
            for (uint32_t j = 0; j < C; j++) sum[j] = sum[j] - x[static_cast<size_t>(r) * C + j];
        const double others = static_cast<double>(tokens) - static_cast<double>(job.exact_rows.size());
        for (uint32_t r : job.exact_rows)
            for (uint32_t j = 0; j < C; j++) x[static_cast<size_t>(r) * C + j] = static_cast<float>(others > 0 ? sum[j] / others : 0);
    }
    std::vector<double> mean, sd;
    if (job.key) {
        moments(x, p.x.size(), C, mean, sd);
        double best = sum_log(sd);
        std::vector<float> y, best_x;
        for (const KvRopeCandidate & r : job.ropes) {
            y = p.x;
            unrotate(y.data(), tokens, C, job.positions, r);
            moments(y.data(), y.size(), C, mean, sd);
            const double score = sum_log(sd);
            if (score < best) {
                best = score;
                best_x.swap(y);
                p.rope = &r;
            }
        }
        if (p.rope) p.x.swap(best_x);
        x = p.x.data();
    }
    if (job.gains) {
        for (size_t k = 0, j = 0; k < p.x.size(); k++, j = j + 1 == C ? 0 : j + 1) x[k] = x[k] * gains[job.gains[j] + 128];
    }
    moments(x, p.x.size(), C, mean, sd);
    double sq = 0;
    for (double v : sd) sq = sq + v * v;
    p.rms = std::sqrt(sq / static_cast<double>(C));
    if (p.rms == 0 || std::isnan(p.rms)) p.rms = 1;
    return p;
}

// qpre-block.ts's classOf: the spread in steps as half-octave bucket | shift << 4.
uint8_t class_of(double ratio) {
    const int shift = ratio > WIDE ? static_cast<int>(std::min(std::ceil(std::log2(ratio / WIDE)), static_cast<double>(MAX_SHIFT))) : 0;
    const double r = ratio / std::ldexp(1.0, shift);
    // Math.max / Math.min: NaN (a spread that is not a number) stays NaN, and NaN | x is x.
    const double b = js_round(2 * std::log2(std::isnan(r) ? r : std::max(r, 1e-6))) + 5;
    const int bucket = std::isnan(b) ? 0 : static_cast<int>(std::max(0.0, std::min(static_cast<double>(BUCKETS - 1), b)));
    return static_cast<uint8_t>(bucket | (shift << 4));
}

// rans.ts's normaliseCounts and fixRounding: frequencies summing to 2^12, every seen symbol at least 1.
void normalise(const uint32_t * counts, uint16_t * freq) {
    double total = 0;
    for (int s = 0; s <= ESC; s++) total += counts[s];
    std::fill(freq, freq + ESC + 1, 0);
    if (total == 0) return;
    int largest = 0;
    for (int s = 0; s <= ESC; s++) {
        if (counts[s] == 0) continue;
        freq[s] = static_cast<uint16_t>(std::max(1.0, std::floor(static_cast<double>(counts[s]) * PROB / total)));
        if (counts[s] > counts[largest]) largest = s;
    }
    int64_t sum = 0;
    for (int s = 0; s <= ESC; s++) sum += freq[s];
    if (sum < PROB) freq[largest] = static_cast<uint16_t>(freq[largest] + (PROB - sum)), sum = PROB;
    for (int s = 0; sum > PROB; s = (s + 1) % (ESC + 1)) {
        const int64_t take = std::min<int64_t>({sum - PROB, static_cast<int64_t>(freq[s]) - 1, (static_cast<int64_t>(freq[s]) + 3) / 4});
        if (take <= 0) continue;
        freq[s] = static_cast<uint16_t>(freq[s] - take);
        sum -= take;
    }
}

// qpre-block.ts's encodeBlock, appended to `out`.
void encode_block(const float * x, uint32_t tokens, uint32_t C, double step_size, bool wide, std::vector<uint8_t> & out) {
    const float stepf = static_cast<float>(step_size);
    const double step = stepf;
    std::vector<double> m, sd;
    moments(x, static_cast<size_t>(tokens) * C, C, m, sd);
    std::vector<uint16_t> mean(C);
    std::vector<uint8_t> cls(C), row;
    for (uint32_t j = 0; j < C; j++) {
        mean[j] = double_to_half(m[j]);
        cls[j] = class_of(sd[j] / step);
        row.push_back(static_cast<uint8_t>(cls[j] & 15));
        if (cls[j] >> 4) row.push_back(static_cast<uint8_t>(BUCKETS + (cls[j] >> 4) - 1));
    }
    const size_t per_token = row.size(), n = per_token * tokens;
    std::vector<uint8_t> symbols(n), contexts(n);
    for (size_t t = 0; t < tokens; t++) std::copy(row.begin(), row.end(), contexts.begin() + static_cast<std::ptrdiff_t>(t * per_token));
    std::vector<uint16_t> escapes;
    std::vector<double> centre(C);
    for (uint32_t j = 0; j < C; j++) centre[j] = half_to_float(mean[j]);
    const double inv = 1 / step;
    for (size_t k = 0, s = 0, j = 0; k < static_cast<size_t>(tokens) * C; k++, j = j + 1 == C ? 0 : j + 1) {
        const double q = js_round((static_cast<double>(x[k]) - centre[j]) * inv);
        const int shift = cls[j] >> 4;
        const int32_t hi = js_int32(q) >> shift;
        if (std::abs(static_cast<int64_t>(hi)) > RANGE) {
            symbols[s++] = ESC;
            escapes.push_back(float_to_half(x[k]));
            if (shift) symbols[s++] = 0;
            continue;
        }
        symbols[s++] = static_cast<uint8_t>(hi + RANGE);
        if (shift) symbols[s++] = js_uint8(q - static_cast<double>(static_cast<int32_t>(static_cast<uint32_t>(hi) << shift)));
    }
    std::vector<uint32_t> counts(static_cast<size_t>(CONTEXTS) * (ESC + 1), 0);
    for (size_t k = 0; k < n; k++) {
        if (symbols[k] > ESC) throw std::runtime_error("KV codec: a value quantises outside the alphabet");
        counts[static_cast<size_t>(contexts[k]) * (ESC + 1) + symbols[k]]++;
    }
    std::vector<uint16_t> freq(static_cast<size_t>(CONTEXTS) * (ESC + 1));
    for (int c = 0; c < CONTEXTS; c++) normalise(&counts[static_cast<size_t>(c) * (ESC + 1)], &freq[static_cast<size_t>(c) * (ESC + 1)]);
    const size_t head = out.size();
    out.resize(head + 4 + 3 * static_cast<size_t>(C) + 4 + 2 * escapes.size());
    put_f32(out, head, stepf);
    for (uint32_t j = 0; j < C; j++) {
        out[head + 4 + 3 * j] = static_cast<uint8_t>(mean[j]);
        out[head + 5 + 3 * j] = static_cast<uint8_t>(mean[j] >> 8);
        out[head + 6 + 3 * j] = cls[j];
    }
    const size_t e = head + 4 + 3 * static_cast<size_t>(C);
    put_u32(out, e, static_cast<uint32_t>(escapes.size()));
    for (size_t i = 0; i < escapes.size(); i++) out[e + 4 + 2 * i] = static_cast<uint8_t>(escapes[i]), out[e + 5 + 2 * i] = static_cast<uint8_t>(escapes[i] >> 8);
    for (int c = 0; c < CONTEXTS; c++) {
        const uint16_t * f = &freq[static_cast<size_t>(c) * (ESC + 1)];
        int lo = 0, hi = ESC;
        while (lo <= ESC && f[lo] == 0) lo++;
        while (hi >= 0 && f[hi] == 0) hi--;
        out.push_back(static_cast<uint8_t>(lo <= ESC ? lo : 1));
        out.push_back(static_cast<uint8_t>(lo <= ESC ? hi : 0));
        for (int s = lo; s <= hi; s++) out.push_back(static_cast<uint8_t>(f[s])), out.push_back(static_cast<uint8_t>(f[s] >> 8));
    }
    std::vector<uint16_t> cum(static_cast<size_t>(CONTEXTS) * (ESC + 1), 0);
    for (int c = 0; c < CONTEXTS; c++)
        for (int s = 1; s <= ESC; s++) cum[static_cast<size_t>(c) * (ESC + 1) + s] = static_cast<uint16_t>(cum[static_cast<size_t>(c) * (ESC + 1) + s - 1] + freq[static_cast<size_t>(c) * (ESC + 1) + s - 1]);
    if (wide) return kvcodec::wide_encode(symbols.data(), contexts.data(), n, freq.data(), cum.data(), ESC + 1, out);
    // rANS (rans.ts's ransEncode): symbols in reverse, two states by parity, bytes written backwards.
    std::vector<double> inverse(freq.size());
    for (size_t i = 0; i < freq.size(); i++) inverse[i] = freq[i] ? 1.0 / freq[i] : 0;
    std::vector<uint8_t> stream(2 * n + 16);
    size_t p = stream.size();
    uint32_t st0 = kvcodec::LOW, st1 = kvcodec::LOW;
    uint8_t * w = stream.data();
    // One symbol into state x: at most two bytes go out (x < 2^31, the bound at least 2^19), written
    // branch-free (a byte not taken is overwritten by the next one or lies below the stream).
    auto put = [&](uint32_t & x, size_t k) {
        const size_t at = static_cast<size_t>(contexts[k]) * (ESC + 1) + symbols[k];
        const uint32_t f = freq[at];
        const uint32_t max = ((kvcodec::LOW >> PROB_BITS) << 8) * f;
        for (int i = 0; i < 2; i++) {
            const uint32_t out = x >= max;
            w[p - 1] = static_cast<uint8_t>(x & 0xff);
            p -= out;
            x >>= 8 * out;
        }
        // x / f without a division: x < 2^31, so x * (1 / f) is off by less than 2^-22 and floors
        // one short only at an exact multiple, which the remainder shows.
        uint32_t quotient = static_cast<uint32_t>(static_cast<double>(x) * inverse[at]);
        uint32_t rest = x - quotient * f;
        if (rest >= f) quotient++, rest -= f;
        x = quotient * PROB + rest + cum[at];
    };
    // Symbols in reverse, even ones in state 0, odd ones in state 1 (rans.ts's ransEncode).
    size_t k = n;
    if (k & 1) put(st0, --k);
    while (k >= 2) {
        put(st1, --k);
        put(st0, --k);
    }
    const uint32_t st[2] = {st0, st1};
    p -= 8;
    for (int i = 0; i < 4; i++) stream[p + i] = static_cast<uint8_t>(st[0] >> (8 * i)), stream[p + 4 + i] = static_cast<uint8_t>(st[1] >> (8 * i));
    out.insert(out.end(), stream.begin() + static_cast<std::ptrdiff_t>(p), stream.end());
}

// Rows, cols, token axis, rope style and base: the head both tensor bodies start with.
void put_shape(std::vector<uint8_t> & b, const KvEncodeJob & job, const KvRopeCandidate * rope) {
    put_u32(b, 0, job.rows);
    put_u32(b, 4, job.cols);
    b[8] = job.token_axis;
    b[9] = static_cast<uint8_t>(rope ? rope->style : 0);
    put_f32(b, 10, static_cast<float>(rope ? rope->base : 0));
}

std::vector<uint8_t> encode_tensor(const KvEncodeJob & job, EncodeGainTable gains) {
    const uint32_t tokens = job.token_axis == 0 ? job.rows : job.cols, C = job.token_axis == 0 ? job.cols : job.rows;
    const Prepared p = prepare(job, tokens, C, gains);
    const size_t segments = job.segment_tokens.size();
    // Kinds 3 and 4 are sink tensors (tiered bodies); 4's blocks carry the wide rANS stream.
    const bool sink = job.kind != 1;
    std::vector<uint8_t> body(sink ? 15 + 8 * segments : 22);
    put_shape(body, job, p.rope);
    if (sink) body[14] = static_cast<uint8_t>(segments);
    size_t from = 0;
    for (size_t i = 0; i < segments; i++) {
        const size_t start = body.size();
        const uint32_t n = job.segment_tokens[i];
        if (job.kind == 1 && i == 1 && n == 0) break;
        encode_block(p.x.data() + from * C, n, C, job.step * job.segment_scales[i] * p.rms, job.kind == 4, body);
        if (sink) put_u32(body, 15 + 8 * i, n), put_u32(body, 19 + 8 * i, static_cast<uint32_t>(body.size() - start));
        if (job.kind == 1 && i == 0) put_u32(body, 18, static_cast<uint32_t>(body.size() - start));
        from += n;
    }
    if (job.kind == 1) {
        put_u32(body, 14, segments > 1 ? job.segment_tokens[1] : 0);
        return body;
    }
    // Sink tensor: coded length | coded | sink rows exact | gain codes.
    std::vector<uint8_t> out(4);
    put_u32(out, 0, static_cast<uint32_t>(body.size()));
    out.insert(out.end(), body.begin(), body.end());
    const size_t at = out.size();
    out.resize(at + 4 + job.exact_rows.size() * (4 + 2 * static_cast<size_t>(C)) + 4);
    put_u32(out, at, static_cast<uint32_t>(job.exact_rows.size()));
    for (size_t r = 0; r < job.exact_rows.size(); r++) {
        const size_t o = at + 4 + r * (4 + 2 * static_cast<size_t>(C));
        const uint32_t i = job.exact_rows[r];
        put_u32(out, o, i);
        for (uint32_t j = 0; j < C; j++) {
            const uint16_t h = job.data[job.token_axis == 0 ? static_cast<size_t>(i) * C + j : static_cast<size_t>(j) * job.cols + i];
            out[o + 4 + 2 * j] = static_cast<uint8_t>(h), out[o + 5 + 2 * j] = static_cast<uint8_t>(h >> 8);
        }
    }
    put_u32(out, out.size() - 4, job.gains ? C : 0);
    if (job.gains) out.insert(out.end(), reinterpret_cast<const uint8_t *>(job.gains), reinterpret_cast<const uint8_t *>(job.gains) + C);
    return out;
}

}  // namespace

std::vector<std::vector<uint8_t>> kv_encode_all(const std::vector<KvEncodeJob> & jobs, EncodeGainTable gains, int threads) {
    std::vector<std::vector<uint8_t>> out(jobs.size());
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex mu;
    std::string error;
    auto run = [&] {
        for (size_t i = next.fetch_add(1); i < jobs.size() && !failed.load(); i = next.fetch_add(1)) {
            try {
                out[i] = encode_tensor(jobs[i], gains);
            } catch (const std::exception & e) {
                std::lock_guard<std::mutex> lock(mu);
                if (!failed.exchange(true)) error = e.what();
            }
        }
    };
    std::vector<std::thread> pool;
    for (size_t i = 1; i < std::min(jobs.size(), static_cast<size_t>(std::max(threads, 1))); i++) pool.emplace_back(run);
    run();
    for (std::thread & t : pool) t.join();
    if (failed.load()) throw std::runtime_error(error);
    return out;
}

}  // namespace llmfleet
