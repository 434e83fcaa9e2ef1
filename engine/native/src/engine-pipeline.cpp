// Pipelined decoding (engine.h EngineOptions::pipeline): after a step in which every sequence
// decoded, the next decode is launched before the step returns; the next step uses it when its
// input is exactly that, or it is rolled back. Engine methods, kept out of engine.cpp.
#include "engine.h"

namespace llmfleet {

// The speculated decode is this step's first decode when the step is exactly what was speculated.
bool Engine::take_speculated(const StepInput & in, std::vector<llama_token> & out, int32_t k) {
    if (speculated_.empty()) return false;
    bool same = in.entries.size() == speculated_.size();
    for (size_t i = 0; same && i < in.entries.size(); i++) {
        const StepEntry & e = in.entries[i];
        const Speculated & s = speculated_[i];
        same = e.sample && e.count == 1 && e.seq == s.seq && e.pos0 == s.pos && in.tokens[e.offset] == s.token;
    }
    if (!same) {
        settle();
        return false;
    }
    std::vector<Row> rows;
    for (size_t i = 0; i < in.entries.size(); i++) rows.push_back({in.entries[i].seq, static_cast<int32_t>(i)});
    const std::vector<llama_token> got = sample_rows(rows);
    for (size_t i = 0; i < got.size(); i++) out[i * k] = got[i];
    speculated_.clear();
    spec_used_++;
    return true;
}

void Engine::speculate(const StepInput & in, const std::vector<llama_token> & out, int32_t k) {
    const size_t n = in.entries.size();
    if (n == 0 || n > opts_.batch_size) return;
    for (size_t e = 0; e < n; e++) {
        const llama_token t = out[e * k + k - 1];
        if (!in.entries[e].sample || in.entries[e].last || t < 0 || is_eog(t)) return;
    }
    std::vector<Speculated> next(n);
    for (size_t e = 0; e < n; e++) {
        const StepEntry & en = in.entries[e];
        next[e] = {en.seq, en.pos0 + en.count + k - 1, out[e * k + k - 1]};
        put(static_cast<int32_t>(e), next[e].token, next[e].pos, next[e].seq, true);
    }
    std::string ignored;  // no room (context full) or any failure: simply no speculation
    if (decode_chunk(static_cast<int32_t>(n), ignored)) speculated_ = std::move(next);
}

void Engine::settle() {
    if (speculated_.empty()) return;
    llama_synchronize(ctx_);
    llama_memory_t mem = llama_get_memory(ctx_);
    for (const Speculated & s : speculated_) llama_memory_seq_rm(mem, s.seq, s.pos, -1);
    speculated_.clear();
    spec_dropped_++;
}

}  // namespace llmfleet
