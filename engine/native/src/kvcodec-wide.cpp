// The wide rANS stream (kvcodec-wide.h).
#include "kvcodec-wide.h"

#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#define LLMFLEET_WIDE_SIMD 1
#include <immintrin.h>
#endif

namespace llmfleet::kvcodec {

namespace {

// Bytes a group may read past the last checked position: its words (at most 64 bytes) plus one
// vector load past where the last one starts (32 bytes AVX-512, 16 AVX2), with room to spare.
constexpr size_t PAD = 4 * 32 + 64;

// One lane's step: symbol from x's slot, x advanced, a word read if it fell below 2^16.
inline uint32_t step_one(uint32_t x, uint8_t context, const uint32_t * tables, uint8_t & sym, const uint8_t *& in) {
    const uint32_t e = tables[(static_cast<uint32_t>(context) << PROB_BITS) | (x & (PROB - 1))];
    sym = static_cast<uint8_t>(e);
    uint32_t v = (((e >> 8) & 0xfff) + 1) * (x >> PROB_BITS) + (e >> 20);
    if (v < WIDE_LOW) {
        v = (v << 16) | static_cast<uint32_t>(in[0] | (in[1] << 8));
        in += 2;
    }
    return v;
}

// Symbols [g, n), one lane at a time from lane 0, with states x[lanes].
void decode_lanes(uint32_t * x, size_t lanes, const uint8_t * contexts, size_t g, size_t n, const uint32_t * tables, uint8_t * out, const uint8_t *& in, const uint8_t * end) {
    for (; g < n; g += lanes) {
        const size_t m = n - g < lanes ? n - g : lanes;
        for (size_t i = 0; i < m; i++) x[i] = step_one(x[i], contexts[g + i], tables, out[g + i], in);
        if (in > end) corrupt("a rANS stream is truncated");
    }
}

#if LLMFLEET_WIDE_SIMD
// Whole groups as two 16-lane vectors; returns the symbols decoded (a multiple of WIDE_LANES), the
// states stored in x.
__attribute__((target("avx512f"))) size_t decode_avx512(uint32_t * x, const uint8_t * contexts, size_t n, const uint32_t * tables, uint8_t * out, const uint8_t *& in, const uint8_t * end) {
    __m512i s0 = _mm512_loadu_si512(x), s1 = _mm512_loadu_si512(x + 16);
    const __m512i slot = _mm512_set1_epi32(PROB - 1), twelve = _mm512_set1_epi32(0xfff), one = _mm512_set1_epi32(1), low = _mm512_set1_epi32(WIDE_LOW);
    size_t g = 0;
    const uint8_t * p = in;
    for (; g + WIDE_LANES <= n; g += WIDE_LANES) {
        const __m512i c0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(contexts + g)));
        const __m512i c1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(contexts + g + 16)));
        const __m512i e0 = _mm512_i32gather_epi32(_mm512_or_si512(_mm512_slli_epi32(c0, PROB_BITS), _mm512_and_si512(s0, slot)), tables, 4);
        const __m512i e1 = _mm512_i32gather_epi32(_mm512_or_si512(_mm512_slli_epi32(c1, PROB_BITS), _mm512_and_si512(s1, slot)), tables, 4);
        _mm_storeu_si128(reinterpret_cast<__m128i *>(out + g), _mm512_cvtepi32_epi8(e0));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(out + g + 16), _mm512_cvtepi32_epi8(e1));
        const __m512i f0 = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(e0, 8), twelve), one);
        const __m512i f1 = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(e1, 8), twelve), one);
        s0 = _mm512_add_epi32(_mm512_mullo_epi32(f0, _mm512_srli_epi32(s0, PROB_BITS)), _mm512_srli_epi32(e0, 20));
        s1 = _mm512_add_epi32(_mm512_mullo_epi32(f1, _mm512_srli_epi32(s1, PROB_BITS)), _mm512_srli_epi32(e1, 20));
        // The lanes below 2^16 take the next words in lane order: lanes 0-15, then 16-31.
        const __mmask16 r0 = _mm512_cmplt_epu32_mask(s0, low);
        const __m512i w0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
        p += 2 * static_cast<size_t>(__builtin_popcount(r0));
        s0 = _mm512_mask_or_epi32(s0, r0, _mm512_slli_epi32(s0, 16), _mm512_maskz_expand_epi32(r0, w0));
        const __mmask16 r1 = _mm512_cmplt_epu32_mask(s1, low);
        const __m512i w1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
        p += 2 * static_cast<size_t>(__builtin_popcount(r1));
        s1 = _mm512_mask_or_epi32(s1, r1, _mm512_slli_epi32(s1, 16), _mm512_maskz_expand_epi32(r1, w1));
        if (p > end) corrupt("a rANS stream is truncated");
    }
    _mm512_storeu_si512(x, s0);
    _mm512_storeu_si512(x + 16, s1);
    in = p;
    return g;
}

// AVX2 has no expand: for an 8-bit mask of the lanes taking a word, lane i takes word k, the count
// of taking lanes below it (what vpexpandd does), as a vpermd index.
struct ExpandIndex {
    alignas(32) uint32_t lane[256][8];
};
const ExpandIndex EXPAND = [] {
    ExpandIndex t{};
    for (uint32_t m = 0; m < 256; m++)
        for (uint32_t i = 0, k = 0; i < 8; i++) t.lane[m][i] = (m >> i) & 1 ? k++ : 0;
    return t;
}();

// Whole groups as four 8-lane vectors (CPUs with AVX2 and not AVX-512: Zen 3 among them); as decode_avx512.
__attribute__((target("avx2"))) size_t decode_avx2(uint32_t * x, const uint8_t * contexts, size_t n, const uint32_t * tables, uint8_t * out, const uint8_t *& in, const uint8_t * end) {
    __m256i s[4];
    for (int v = 0; v < 4; v++) s[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + 8 * v));
    const __m256i slot = _mm256_set1_epi32(PROB - 1), twelve = _mm256_set1_epi32(0xfff), one = _mm256_set1_epi32(1), below = _mm256_set1_epi32(WIDE_LOW - 1);
    const __m256i bytes = _mm256_set1_epi32(0xff), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const int * table = reinterpret_cast<const int *>(tables);
    size_t g = 0;
    const uint8_t * p = in;
    for (; g + WIDE_LANES <= n; g += WIDE_LANES) {
        __m256i e[4];
        for (int v = 0; v < 4; v++) {
            const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(contexts + g + 8 * v)));
            e[v] = _mm256_i32gather_epi32(table, _mm256_or_si256(_mm256_slli_epi32(c, PROB_BITS), _mm256_and_si256(s[v], slot)), 4);
        }
        // The 32 symbols (each word's low byte) packed in lane order.
        const __m256i a = _mm256_packus_epi32(_mm256_and_si256(e[0], bytes), _mm256_and_si256(e[1], bytes));
        const __m256i b = _mm256_packus_epi32(_mm256_and_si256(e[2], bytes), _mm256_and_si256(e[3], bytes));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + g), _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), order));
        for (int v = 0; v < 4; v++) {
            const __m256i f = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(e[v], 8), twelve), one);
            s[v] = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srli_epi32(s[v], PROB_BITS)), _mm256_srli_epi32(e[v], 20));
            // Lanes at or below 2^16 - 1 (unsigned) take the next words, in lane order.
            const __m256i take = _mm256_cmpeq_epi32(_mm256_min_epu32(s[v], below), s[v]);
            const int m = _mm256_movemask_ps(_mm256_castsi256_ps(take));
            const __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
            p += 2 * static_cast<size_t>(__builtin_popcount(static_cast<unsigned>(m)));
            const __m256i placed = _mm256_permutevar8x32_epi32(words, _mm256_load_si256(reinterpret_cast<const __m256i *>(EXPAND.lane[m])));
            s[v] = _mm256_blendv_epi8(s[v], _mm256_or_si256(_mm256_slli_epi32(s[v], 16), placed), take);
        }
        if (p > end) corrupt("a rANS stream is truncated");
    }
    for (int v = 0; v < 4; v++) _mm256_storeu_si256(reinterpret_cast<__m256i *>(x + 8 * v), s[v]);
    in = p;
    return g;
}

// The vector path: AVX-512 where the CPU has it, else AVX2, else none. LLMFLEET_KVCODEC_SIMD=avx2 or
// none chooses a narrower one, so tests and benchmarks can check and time the other CPUs' paths here.
enum class Simd { none, avx2, avx512 };
const Simd SIMD = [] {
    const char * want = std::getenv("LLMFLEET_KVCODEC_SIMD");
    const std::string w = want ? want : "";
    if (w == "none") return Simd::none;
    if (w != "avx2" && __builtin_cpu_supports("avx512f")) return Simd::avx512;
    return __builtin_cpu_supports("avx2") ? Simd::avx2 : Simd::none;
}();
#endif

}  // namespace

void wide_decode(Span stream, const uint8_t * contexts, size_t n, const uint32_t * tables, uint8_t * out, std::vector<uint8_t> & copy) {
    const size_t lanes = wide_lanes(n), head = 4 * lanes;
    if (stream.n < head || (stream.n - head) % 2 != 0) corrupt("a wide rANS stream has a partial state or word");
    copy.resize(stream.n + PAD);
    std::memcpy(copy.data(), stream.p, stream.n);
    std::memset(copy.data() + stream.n, 0, PAD);
    uint32_t x[WIDE_LANES];
    for (size_t i = 0; i < lanes; i++) x[i] = stream.u32(4 * i);
    const uint8_t * in = copy.data() + head;
    const uint8_t * end = copy.data() + stream.n;
    size_t g = 0;
#if LLMFLEET_WIDE_SIMD
    if (lanes == WIDE_LANES && SIMD == Simd::avx512) g = decode_avx512(x, contexts, n, tables, out, in, end);
    if (lanes == WIDE_LANES && SIMD == Simd::avx2) g = decode_avx2(x, contexts, n, tables, out, in, end);
#endif
    decode_lanes(x, lanes, contexts, g, n, tables, out, in, end);
    bool ended = in == end;
    for (size_t i = 0; i < lanes; i++) ended = ended && x[i] == WIDE_LOW;
    if (!ended) corrupt("a wide rANS stream does not end where its symbols do");
}

void wide_encode(const uint8_t * symbols, const uint8_t * contexts, size_t n, const uint16_t * freq, const uint16_t * cum, size_t alphabet, std::vector<uint8_t> & out) {
    std::vector<uint16_t> words(n);
    size_t p = n;
    const size_t lanes = wide_lanes(n), head = 4 * lanes;
    uint32_t x[WIDE_LANES];
    for (uint32_t & s : x) s = WIDE_LOW;
    for (size_t k = n; k-- > 0;) {
        const size_t at = static_cast<size_t>(contexts[k]) * alphabet + symbols[k];
        const uint32_t f = freq[at];
        uint32_t & s = x[k % lanes];
        // At most one word: from below 2^32, one leaves less than 2^16, under the bound 2^20 * f.
        if (static_cast<uint64_t>(s) >= (static_cast<uint64_t>(WIDE_LOW >> PROB_BITS) << 16) * f) {
            words[--p] = static_cast<uint16_t>(s);
            s >>= 16;
        }
        s = (s / f) * PROB + s % f + cum[at];
    }
    const size_t at = out.size();
    out.resize(at + head + 2 * (n - p));
    for (size_t i = 0; i < lanes; i++)
        for (int b = 0; b < 4; b++) out[at + 4 * i + b] = static_cast<uint8_t>(x[i] >> (8 * b));
    for (size_t i = p; i < n; i++) out[at + head + 2 * (i - p)] = static_cast<uint8_t>(words[i]), out[at + head + 2 * (i - p) + 1] = static_cast<uint8_t>(words[i] >> 8);
}

}  // namespace llmfleet::kvcodec
