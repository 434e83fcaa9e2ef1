// The native KV decoder under AddressSanitizer and UndefinedBehaviorSanitizer
// (scripts/native/kvcodec-fuzz.sh): each iteration takes a tensor of the corpus (jobs.ts), corrupts
// its body (cut short, bytes changed, a length field changed, a run of 0xff) and decodes it. It
// must decode or throw std::runtime_error; a read or write out of bounds or undefined behaviour
// aborts the run.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <vector>

#include "kvcodec-decode.h"

namespace {

struct Tensor {
    uint32_t kind, rows, cols, axis, pairs, seed_rows;
    std::vector<uint8_t> body;
    std::vector<int32_t> positions;
    std::vector<double> step_cos, step_sin, seeds;
};

template <typename T>
void take(const std::vector<uint8_t> & d, size_t & o, std::vector<T> & out, size_t n) {
    out.resize(n);
    if (n) std::memcpy(out.data(), d.data() + o, n * sizeof(T));
    o += n * sizeof(T);
}

std::vector<Tensor> corpus(const char * file) {
    std::ifstream f(file, std::ios::binary);
    const std::vector<uint8_t> d((std::istreambuf_iterator<char>(f)), {});
    std::vector<Tensor> out;
    size_t o = 0;
    auto u32 = [&] {
        uint32_t v;
        std::memcpy(&v, d.data() + o, 4);
        o += 4;
        return v;
    };
    while (o < d.size()) {
        Tensor t;
        t.kind = u32(), t.rows = u32(), t.cols = u32(), t.axis = u32();
        take(d, o, t.body, u32());
        take(d, o, t.positions, t.axis == 0 ? t.rows : t.cols);
        t.pairs = u32();
        take(d, o, t.step_cos, t.pairs);
        take(d, o, t.step_sin, t.pairs);
        t.seed_rows = u32();
        take(d, o, t.seeds, static_cast<size_t>(t.seed_rows) * 2 * t.pairs);
        out.push_back(std::move(t));
    }
    return out;
}

void corrupt(std::vector<uint8_t> & b, std::mt19937 & rng) {
    switch (rng() % 4) {
        case 0: b.resize(rng() % (b.size() + 1)); break;
        case 1: for (int k = 1 + rng() % 8; k > 0; k--) b[rng() % b.size()] = static_cast<uint8_t>(rng()); break;
        case 2: b[rng() % std::min<size_t>(b.size(), 40)] = static_cast<uint8_t>(rng()); break;
        default: for (size_t k = rng() % b.size(), end = k + 4; k < b.size() && k < end; k++) b[k] = 0xff;
    }
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: fuzz CORPUS SEED ITERATIONS\n");
        return 2;
    }
    const std::vector<Tensor> tensors = corpus(argv[1]);
    std::mt19937 rng(static_cast<uint32_t>(std::atoi(argv[2])));
    float gains[256];
    for (int i = 0; i < 256; i++) gains[i] = static_cast<float>(std::pow(2.0, -(i - 128) / 32.0));
    int decoded = 0, thrown = 0;
    for (int it = std::atoi(argv[3]); it > 0; it--) {
        const Tensor & t = tensors[rng() % tensors.size()];
        std::vector<uint8_t> body = t.body;
        corrupt(body, rng);
        std::vector<uint16_t> out(static_cast<size_t>(t.rows) * t.cols);
        llmfleet::KvDecodeJob j;
        j.kind = static_cast<int>(t.kind), j.body = body.data(), j.body_len = body.size(), j.out = out.data();
        j.rows = t.rows, j.cols = t.cols, j.token_axis = static_cast<uint8_t>(t.axis), j.positions = t.positions.data();
        if (t.pairs) j.step_cos = t.step_cos.data(), j.step_sin = t.step_sin.data(), j.seeds = t.seeds.data(), j.seed_count = t.seed_rows, j.pairs = t.pairs;
        try {
            llmfleet::kv_decode_all(&j, 1, gains, 1);
            decoded++;
        } catch (const std::runtime_error &) {
            thrown++;
        }
    }
    std::printf("kvcodec-fuzz: %d corrupted bodies decoded, %d refused, no memory or undefined-behaviour error\n", decoded, thrown);
    return 0;
}
