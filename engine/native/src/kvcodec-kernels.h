// Kernels of the qpre-family KV decoder (kvcodec-decode.cpp): a bounds-checked view of a body, the
// F16 conversions exactly as engine/kvcodec/state-tensors.ts does them, the rANS pass of
// engine/kvcodec/rans.ts (two interleaved states, 12-bit frequencies, byte-wise renormalisation),
// and the transposed write of F16 rows (V stored transposed).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
// F16C conversion of rows to F16, chosen at run time where the CPU has it (the build's baseline is
// plain x86-64).
#if defined(__x86_64__) && defined(__GNUC__)
#define LLMFLEET_F16C 1
#include <immintrin.h>
#endif

namespace llmfleet::kvcodec {

[[noreturn]] inline void corrupt(const char * what) { throw std::runtime_error(std::string("KV codec payload is corrupt: ") + what); }

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
        const uint32_t b = u32(at);
        float f;
        std::memcpy(&f, &b, 4);
        return f;
    }
};

// F16 bits -> f32, as state-tensors.ts's F16_TO_F32 table (every NaN the quiet one).
inline float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    const uint32_t e = (h >> 10) & 0x1f;
    uint32_t m = h & 0x3ff;
    uint32_t bits;
    if (e == 31) {
        bits = m ? 0x7fc00000u : (sign | 0x7f800000u);
    } else if (e != 0) {
        bits = sign | ((e + 112) << 23) | (m << 13);
    } else if (m == 0) {
        bits = sign;
    } else {
        uint32_t exp = 113;
        while (!(m & 0x400)) {
            m <<= 1;
            exp--;
        }
        bits = sign | (exp << 23) | ((m & 0x3ff) << 13);
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

// f32 to F16, 16 at a time: the normal range branch-free (the compiler vectorises it), then the
// group again one by one if any of its values is zero, subnormal or beyond F16 (1 group in 30 on a
// real state: one check per chunk would redo almost every chunk).
inline __attribute__((always_inline)) void floats_to_halves(const float * __restrict x, uint16_t * __restrict out, size_t n) {
    size_t g = 0;
    for (; g + 16 <= n; g += 16) {
        uint32_t outside = 0;
        for (size_t j = g; j < g + 16; j++) {
            uint32_t b;
            std::memcpy(&b, x + j, 4);
            const uint32_t e = (b >> 23) & 0xff;
            outside |= static_cast<uint32_t>(e - 113u > 29u);
            const uint32_t r = ((e - 112u) << 10) | ((b >> 13) & 0x3ff);
            out[j] = static_cast<uint16_t>(((b >> 16) & 0x8000) | ((r + (((b & 0x1fff) + (r & 1) + 0xfff) >> 13)) & 0x7fff));
        }
        if (!outside) continue;
        for (size_t j = g; j < g + 16; j++) {
            uint32_t b;
            std::memcpy(&b, x + j, 4);
            if (((b >> 23) & 0xff) - 113u > 29u) out[j] = float_to_half(x[j]);
        }
    }
    for (; g < n; g++) out[g] = float_to_half(x[g]);
}

#if LLMFLEET_F16C
// floats_to_halves with vcvtps2ph, 16 at a time: it rounds to nearest even as f32ToF16 does for
// results in F16's normal range (overflow to infinity included), so only a group with a value outside
// it (zero, subnormal, beyond F16, NaN: the same exponent test) is redone one by one.
__attribute__((target("avx2,f16c"))) inline void floats_to_halves_f16c(const float * __restrict x, uint16_t * __restrict out, size_t n) {
    const __m256i exponent = _mm256_set1_epi32(0xff), first = _mm256_set1_epi32(113), span = _mm256_set1_epi32(29);
    size_t g = 0;
    for (; g + 16 <= n; g += 16) {
        const __m256 a = _mm256_loadu_ps(x + g), b = _mm256_loadu_ps(x + g + 8);
        _mm_storeu_si128(reinterpret_cast<__m128i *>(out + g), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(out + g + 8), _mm256_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT));
        // e - 113 as unsigned is at most 29 where the value is normal in F16.
        const __m256i ea = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(a), 23), exponent), first);
        const __m256i eb = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(b), 23), exponent), first);
        const __m256i inside = _mm256_and_si256(_mm256_cmpeq_epi32(_mm256_min_epu32(ea, span), ea), _mm256_cmpeq_epi32(_mm256_min_epu32(eb, span), eb));
        if (_mm256_movemask_epi8(inside) == -1) continue;
        for (size_t j = g; j < g + 16; j++) out[j] = float_to_half(x[j]);
    }
    for (; g < n; g++) out[g] = float_to_half(x[g]);
}
#endif

// floats_to_halves, through F16C where the CPU has it.
inline void floats_to_halves_any(const float * x, uint16_t * out, size_t n) {
#if LLMFLEET_F16C
    static const bool f16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    if (f16c) return floats_to_halves_f16c(x, out, n);
#endif
    floats_to_halves(x, out, n);
}

constexpr uint32_t PROB_BITS = 12;
constexpr uint32_t PROB = 1u << PROB_BITS;
constexpr uint32_t LOW = 1u << 23;

// Decode tables of a set of contexts, one region of TABLE_WORDS u32 per context: the symbol of each
// of the 2^12 slots (bytes: small enough to stay in L1 for the handful of contexts a block uses, and
// cheap to build for a small block), then per symbol its frequency | cumulative frequency << 16, then
// unused words up to a power of two (a region is found with one shift). One base pointer for both
// lookups: a pass of two lanes holds six pointers and four states in registers.
constexpr uint32_t TABLE_SHIFT = 11;
constexpr size_t TABLE_WORDS = size_t{1} << TABLE_SHIFT;
static_assert(PROB / 4 + 256 <= TABLE_WORDS, "a context's decode table overflows its region");

// A block's rANS decoding: the two states, the stream they read, the decode tables and the chunk's
// symbols, which come in as their contexts and are decoded in place (symbol k of a chunk uses state
// k & 1: chunks start even).
// The stream is read from a copy followed by `pad` zero bytes: from a state in [2^23, 2^31) a step
// leaves at least 2^11, so at most two bytes come in per symbol, and a pass of at most pad / 2 - 1
// symbols reads inside the copy (a step two bytes ahead, a pair four) without a check or a branch
// per byte. After each pass, a stream that consumed the padding is truncated or corrupt (a valid one
// only ever peeks at it).
struct RansLane {
    uint32_t x[2];
    const uint8_t * in;
    size_t len, p;
    const uint32_t * tables;
    uint8_t * sym;
};

inline void rans_start(RansLane & l, Span stream, std::vector<uint8_t> & copy, size_t pad) {
    l.x[0] = stream.u32(0);
    l.x[1] = stream.u32(4);
    // The encoder starts and ends every state in [2^23, 2^31); outside, the bound on bytes per symbol
    // and the renormalisation's shift (LLMFLEET_RANS_SHIFT) fail.
    if (l.x[0] < LOW || l.x[1] < LOW || l.x[0] >> 31 || l.x[1] >> 31) corrupt("a rANS state is out of range");
    copy.resize(stream.n + pad);
    std::memcpy(copy.data(), stream.p, stream.n);
    std::memset(copy.data() + stream.n, 0, pad);
    l.in = copy.data();
    l.len = stream.n;
    l.p = 8;
}

inline void rans_check(const RansLane & l) {
    if (l.p > l.len) corrupt("a rANS stream is truncated");
}

// A lane's pointers as locals for a pass. The symbols are stored through a uint8_t pointer, which
// may alias anything: read through the lane, every pointer would be loaded again after each store.
struct RansView {
    const uint32_t * __restrict tables;
    uint8_t * __restrict sym;
    const uint8_t * __restrict in;
    explicit RansView(const RansLane & l) : tables(l.tables), sym(l.sym), in(l.in + l.p) {}
    void save(RansLane & l) const { l.p = static_cast<size_t>(in - l.in); }
};

// Symbol k, decoded with state x (before renormalisation): the slot's symbol, stored over its context.
#define LLMFLEET_RANS_DECODE(v, x, k)                                                                            \
    do {                                                                                                         \
        const uint32_t * t_ = v.tables + (static_cast<size_t>(v.sym[k]) << TABLE_SHIFT);                         \
        const uint32_t slot_ = x & (PROB - 1);                                                                   \
        const uint32_t sym_ = reinterpret_cast<const uint8_t *>(t_)[slot_];                                      \
        const uint32_t fc_ = t_[PROB / 4 + sym_];                                                                \
        v.sym[k] = static_cast<uint8_t>(sym_);                                                                   \
        x = (fc_ & 0xffff) * (x >> PROB_BITS) + slot_ - (fc_ >> 16);                                             \
    } while (0)

// Bits a decoded state x (in [2^11, 2^31)) takes in, 8 per byte: 16 below 2^15, 8 below 2^23, from
// its leading zeros (1-8: 0 bits, 9-16: 8, 17-20: 16).
#define LLMFLEET_RANS_SHIFT(x) ((static_cast<uint32_t>(__builtin_clz(x)) - 1) & ~7u)

// x takes `shift` bits from the top of the 16 bits `next` (the stream's next two bytes), branch-free.
#define LLMFLEET_RANS_SHIFT_IN(x, shift, next) (x = static_cast<uint32_t>((((static_cast<uint64_t>(x) << 16) | (next)) << (shift)) >> 16))

// One symbol: decode with state x, then renormalise, reading the next two bytes.
#define LLMFLEET_RANS_STEP(v, x, k)                                                                              \
    do {                                                                                                         \
        LLMFLEET_RANS_DECODE(v, x, k);                                                                           \
        const uint32_t sh_ = LLMFLEET_RANS_SHIFT(x);                                                             \
        LLMFLEET_RANS_SHIFT_IN(x, sh_, (static_cast<uint32_t>(v.in[0]) << 8) | v.in[1]);                         \
        v.in += sh_ >> 3;                                                                                        \
    } while (0)

// Symbols k (state x0) and k + 1 (state x1). The four bytes the two can take are read once, before
// either decodes: x1's come after however many x0 took.
#define LLMFLEET_RANS_PAIR(v, x0, x1, k)                                                                         \
    do {                                                                                                         \
        const uint32_t w_ = (static_cast<uint32_t>(v.in[0]) << 24) | (static_cast<uint32_t>(v.in[1]) << 16) |    \
                            (static_cast<uint32_t>(v.in[2]) << 8) | v.in[3];                                     \
        LLMFLEET_RANS_DECODE(v, x0, k);                                                                          \
        LLMFLEET_RANS_DECODE(v, x1, k + 1);                                                                      \
        const uint32_t sh0_ = LLMFLEET_RANS_SHIFT(x0), sh1_ = LLMFLEET_RANS_SHIFT(x1);                           \
        LLMFLEET_RANS_SHIFT_IN(x0, sh0_, w_ >> 16);                                                              \
        LLMFLEET_RANS_SHIFT_IN(x1, sh1_, (w_ << sh0_) >> 16);                                                    \
        v.in += (sh0_ + sh1_) >> 3;                                                                              \
    } while (0)

// Symbols [k0, k1) of the lane's chunk.
inline void rans_range(RansLane & a, size_t k0, size_t k1) {
    uint32_t x0 = a.x[0], x1 = a.x[1];
    RansView v(a);
    size_t k = k0;
    if ((k & 1) && k < k1) {
        LLMFLEET_RANS_STEP(v, x1, k);
        k++;
    }
    for (; k + 1 < k1; k += 2) LLMFLEET_RANS_PAIR(v, x0, x1, k);
    if (k < k1) LLMFLEET_RANS_STEP(v, x0, k);
    a.x[0] = x0;
    a.x[1] = x1;
    v.save(a);
    rans_check(a);
}

// The chunks of two lanes (na and nb symbols) together: four independent states in flight, where one
// lane's two would wait on each other's latency (table loads, multiply, renormalisation).
inline void rans_two(RansLane & a, size_t na, RansLane & b, size_t nb) {
    const size_t m = std::min(na, nb) & ~static_cast<size_t>(1);
    uint32_t a0 = a.x[0], a1 = a.x[1], b0 = b.x[0], b1 = b.x[1];
    RansView va(a), vb(b);
    for (size_t k = 0; k < m; k += 2) {
        LLMFLEET_RANS_PAIR(va, a0, a1, k);
        LLMFLEET_RANS_PAIR(vb, b0, b1, k);
    }
    a.x[0] = a0, a.x[1] = a1, b.x[0] = b0, b.x[1] = b1;
    va.save(a), vb.save(b);
    rans_range(a, m, na);
    rans_range(b, m, nb);
}

#undef LLMFLEET_RANS_PAIR
#undef LLMFLEET_RANS_STEP
#undef LLMFLEET_RANS_SHIFT_IN
#undef LLMFLEET_RANS_SHIFT
#undef LLMFLEET_RANS_DECODE

// n rows of C F16 values (row-major in h) into a channel-major tensor whose channel rows are
// `tokens` elements apart (its columns, or more: a strided view), from column `first`: 8x8 blocks
// through SSE2 registers, the edges one by one.
inline __attribute__((always_inline)) void write_transposed(const uint16_t * __restrict h, uint32_t n, uint32_t C, uint16_t * __restrict out, size_t tokens, uint32_t first) {
    uint32_t r0 = 0;
#if defined(__SSE2__)
    for (; r0 + 8 <= n; r0 += 8) {
        uint32_t j0 = 0;
        for (; j0 + 8 <= C; j0 += 8) {
            __m128i a[8];
            for (int i = 0; i < 8; i++) a[i] = _mm_loadu_si128(reinterpret_cast<const __m128i *>(h + static_cast<size_t>(r0 + i) * C + j0));
            __m128i t[8], u[8];
            for (int i = 0; i < 4; i++) {
                t[i] = _mm_unpacklo_epi16(a[2 * i], a[2 * i + 1]);
                t[i + 4] = _mm_unpackhi_epi16(a[2 * i], a[2 * i + 1]);
            }
            // t[0..3]: channels 0-3 of row pairs (0,1) .. (6,7); t[4..7]: channels 4-7.
            for (int q = 0; q < 2; q++) {
                u[4 * q] = _mm_unpacklo_epi32(t[4 * q], t[4 * q + 1]);
                u[4 * q + 1] = _mm_unpackhi_epi32(t[4 * q], t[4 * q + 1]);
                u[4 * q + 2] = _mm_unpacklo_epi32(t[4 * q + 2], t[4 * q + 3]);
                u[4 * q + 3] = _mm_unpackhi_epi32(t[4 * q + 2], t[4 * q + 3]);
            }
            // u[4q + 0/1]: rows 0-3 of channels (4q + 0, 1) / (4q + 2, 3); u[4q + 2/3]: rows 4-7.
            for (int q = 0; q < 2; q++) {
                for (int h2 = 0; h2 < 2; h2++) {
                    const __m128i lo = u[4 * q + h2], hi = u[4 * q + 2 + h2];
                    const uint32_t j = j0 + 4 * q + 2 * h2;
                    _mm_storeu_si128(reinterpret_cast<__m128i *>(out + static_cast<size_t>(j) * tokens + first + r0), _mm_unpacklo_epi64(lo, hi));
                    _mm_storeu_si128(reinterpret_cast<__m128i *>(out + static_cast<size_t>(j + 1) * tokens + first + r0), _mm_unpackhi_epi64(lo, hi));
                }
            }
        }
        for (uint32_t j = j0; j < C; j++) {
            for (uint32_t r = r0; r < r0 + 8; r++) out[static_cast<size_t>(j) * tokens + first + r] = h[static_cast<size_t>(r) * C + j];
        }
    }
#endif
    for (uint32_t j = 0; j < C; j++) {
        for (uint32_t r = r0; r < n; r++) out[static_cast<size_t>(j) * tokens + first + r] = h[static_cast<size_t>(r) * C + j];
    }
}

}  // namespace llmfleet::kvcodec
