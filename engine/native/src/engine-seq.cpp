// Sequence surgery the RAG join needs (engine/rag): move a sequence's cells to other positions, and
// (diagnostics, the RAG and codec benchmarks' quality measures) the logits of every position of a
// replayed token run. Engine methods, kept out of engine.cpp to keep each file short.
#include "engine.h"

#include <cstring>

namespace llmfleet {

bool Engine::seq_add(int32_t seq, int32_t p0, int32_t p1, int32_t delta) {
    settle();
    llama_memory_t mem = llama_get_memory(ctx_);
    // A shift re-rotates the keys (RoPE) on the next decode; a model whose memory cannot (no RoPE,
    // recurrent state) refuses, and the caller recomputes instead.
    if (!llama_memory_can_shift(mem)) return false;
    llama_memory_seq_add(mem, seq, p0, p1, delta);
    return true;
}

std::vector<float> Engine::eval_logits(int32_t seq, int32_t pos0, const std::vector<llama_token> & tokens, std::string & error) {
    settle();
    const int32_t n_vocab = this->n_vocab();
    const int32_t cap = static_cast<int32_t>(opts_.batch_size);
    const int32_t total = static_cast<int32_t>(tokens.size());
    std::vector<float> out(static_cast<size_t>(total) * static_cast<size_t>(n_vocab));
    for (int32_t done = 0; done < total;) {
        const int32_t n = std::min(cap, total - done);
        for (int32_t i = 0; i < n; i++) put(i, tokens[done + i], pos0 + done + i, seq, true);
        if (!decode_chunk(n, error)) return {};
        for (int32_t i = 0; i < n; i++) {
            const float * l = llama_get_logits_ith(ctx_, i);
            if (!l) {
                error = "no logits for batch row " + std::to_string(i);
                return {};
            }
            std::memcpy(out.data() + static_cast<size_t>(done + i) * n_vocab, l, sizeof(float) * n_vocab);
        }
        done += n;
    }
    return out;
}

}  // namespace llmfleet
