// bench:kv-importance's probe (built by bench/kv-importance/build.ts against the llama.cpp that
// scripts/native/build.sh builds): evaluates a context and then its continuation on one
// sequence of a fresh CPU context, and records, per layer and context position, the largest
// attention probability any head of a query gave it: from the last W context tokens' queries
// (the observation window, what an encoder could know when the state is written) and from the
// continuation's queries (what the continuation really attended to: the oracle).
//   attention <model.gguf> <context.i32> <continuation.i32> <out.f32> <W>
// Out: i32 layers, i32 positions, then f32 [2][layers][positions] (window, continuation).
// A fresh context filled from cell 0 on one sequence puts position p in cell p, so a row of
// kq_soft_max (n_kv cells) is indexed by position.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

namespace {

struct Probe {
    int layers = 0;
    int positions = 0;
    int window = 32;
    int pos0 = 0;           // position of the current batch's first row
    bool continuation = false;
    std::vector<float> max[2];  // [0] window, [1] continuation; layers x positions
    std::vector<float> buf;
};

Probe probe;

bool on_tensor(ggml_tensor * t, bool ask, void *) {
    if (strncmp(t->name, "kq_soft_max-", 12) != 0) return !ask;
    if (ask) return true;
    const int il = atoi(t->name + 12);
    const int64_t n_kv = t->ne[0], rows = t->ne[1], heads = t->ne[2];
    probe.buf.resize(ggml_nelements(t));
    ggml_backend_tensor_get(t, probe.buf.data(), 0, probe.buf.size() * sizeof(float));
    float * out = probe.max[probe.continuation ? 1 : 0].data() + (size_t) il * probe.positions;
    const int64_t cells = n_kv < probe.positions ? n_kv : probe.positions;
    for (int64_t r = 0; r < rows; r++) {
        if (!probe.continuation && probe.pos0 + r < probe.positions - probe.window) continue;
        for (int64_t h = 0; h < heads; h++) {
            const float * p = probe.buf.data() + (h * rows + r) * n_kv;
            for (int64_t c = 0; c < cells; c++) out[c] = p[c] > out[c] ? p[c] : out[c];
        }
    }
    return true;
}

std::vector<int32_t> read_tokens(const char * path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<int32_t> v;
    int32_t x;
    while (in.read(reinterpret_cast<char *>(&x), 4)) v.push_back(x);
    return v;
}

bool eval(llama_context * ctx, const std::vector<int32_t> & tokens, int pos0) {
    for (size_t o = 0; o < tokens.size(); o += 512) {
        const int n = (int) std::min<size_t>(512, tokens.size() - o);
        llama_batch b = llama_batch_init(n, 0, 1);
        for (int i = 0; i < n; i++) {
            b.token[i] = tokens[o + i];
            b.pos[i] = pos0 + (int) o + i;
            b.n_seq_id[i] = 1;
            b.seq_id[i][0] = 0;
            b.logits[i] = i == n - 1;
        }
        b.n_tokens = n;
        probe.pos0 = pos0 + (int) o;
        const int rc = llama_decode(ctx, b);
        llama_batch_free(b);
        if (rc != 0) return false;
    }
    return true;
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: attention <model.gguf> <context.i32> <continuation.i32> <out.f32> <window>\n");
        return 2;
    }
    const auto context = read_tokens(argv[2]);
    const auto continuation = read_tokens(argv[3]);
    probe.positions = (int) context.size();
    probe.window = atoi(argv[5]);
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    auto mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    probe.layers = llama_model_n_layer(model);
    for (auto & m : probe.max) m.assign((size_t) probe.layers * probe.positions, 0.0f);
    auto cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) (context.size() + continuation.size() + 64);
    cp.n_batch = cp.n_ubatch = 512;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;  // kq_soft_max exists only without it
    cp.swa_full = true;
    cp.n_threads = cp.n_threads_batch = (int32_t) std::thread::hardware_concurrency();
    cp.cb_eval = on_tensor;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx || !eval(ctx, context, 0)) return 1;
    probe.continuation = true;
    if (!eval(ctx, continuation, probe.positions)) return 1;
    FILE * f = fopen(argv[4], "wb");
    if (!f) return 1;
    const int32_t head[2] = {probe.layers, probe.positions};
    fwrite(head, 4, 2, f);
    for (auto & m : probe.max) fwrite(m.data(), 4, m.size(), f);
    fclose(f);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
