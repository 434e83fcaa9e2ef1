// Sampling beyond temperature/top-k/top-p for one sequence (OpenAI's parameters): presence and
// frequency penalties and logit biases applied to a copy of the sequence's logits, a GBNF grammar
// the output must match (llama.cpp's grammar sampler), and the log-probabilities of each sampled
// token with its most likely alternatives. A sequence with any of these samples here, never on
// the greedy fast path (plain argmax, or the device's argmax), which would skip them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "llama.h"

namespace llmfleet {

struct SamplerConfig;

struct SamplingExtras {
    float presence_penalty = 0.0f;
    float frequency_penalty = 0.0f;
    std::vector<std::pair<llama_token, float>> logit_bias;
    std::string grammar;         // GBNF, start rule "root"; empty = none
    int32_t logprobs = -1;       // -1 = off; else alternatives per token (0..20)
    bool empty() const { return presence_penalty == 0.0f && frequency_penalty == 0.0f && logit_bias.empty() && grammar.empty() && logprobs < 0; }
};

// One sampled token's log-probability (of the model's distribution, before penalties, biases and
// the grammar) and the most likely tokens at its position.
struct TokenLogprob {
    llama_token token;
    float logprob;
    std::vector<std::pair<llama_token, float>> top;
};

class SeqSampler {
public:
    // nullptr + error when the grammar does not parse.
    static std::unique_ptr<SeqSampler> make(const llama_vocab * vocab, const SamplerConfig & cfg, SamplingExtras extras, std::string & error);
    ~SeqSampler();
    // The next token from the row's logits; records its logprobs when asked for.
    llama_token sample(const float * logits);
    std::vector<TokenLogprob> take_logprobs();

private:
    SeqSampler() = default;
    llama_token choose(std::vector<llama_token_data> & cur);
    bool grammar_allows(llama_token t);
    void fill(const float * logits);
    void record(const float * logits, llama_token chosen);

    const llama_vocab * vocab_ = nullptr;
    int32_t n_vocab_ = 0;
    float temperature_ = 0.0f;
    SamplingExtras extras_;
    llama_sampler * chain_ = nullptr;    // top-k, top-p, temperature, dist (temperature > 0)
    llama_sampler * grammar_ = nullptr;  // nullptr = unconstrained
    std::unordered_map<llama_token, int32_t> counts_;  // generated tokens, for the penalties
    std::vector<llama_token_data> cur_;
    std::vector<TokenLogprob> logprobs_;
};

}  // namespace llmfleet
