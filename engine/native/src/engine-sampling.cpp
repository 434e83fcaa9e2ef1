#include "engine-sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine.h"

namespace llmfleet {

std::unique_ptr<SeqSampler> SeqSampler::make(const llama_vocab * vocab, const SamplerConfig & cfg, SamplingExtras extras, std::string & error) {
    std::unique_ptr<SeqSampler> s(new SeqSampler());
    s->vocab_ = vocab;
    s->n_vocab_ = llama_vocab_n_tokens(vocab);
    s->temperature_ = cfg.temperature;
    if (!extras.grammar.empty()) {
        s->grammar_ = llama_sampler_init_grammar(vocab, extras.grammar.c_str(), "root");
        if (!s->grammar_) {
            error = "the grammar does not parse";
            return nullptr;
        }
    }
    if (cfg.temperature > 0.0f) {
        s->chain_ = llama_sampler_chain_init(llama_sampler_chain_default_params());
        if (cfg.top_k > 0) llama_sampler_chain_add(s->chain_, llama_sampler_init_top_k(cfg.top_k));
        if (cfg.top_p < 1.0f) llama_sampler_chain_add(s->chain_, llama_sampler_init_top_p(cfg.top_p, 1));
        llama_sampler_chain_add(s->chain_, llama_sampler_init_temp(cfg.temperature));
        llama_sampler_chain_add(s->chain_, llama_sampler_init_dist(cfg.seed));
    }
    s->extras_ = std::move(extras);
    return s;
}

SeqSampler::~SeqSampler() {
    if (chain_) llama_sampler_free(chain_);
    if (grammar_) llama_sampler_free(grammar_);
}

// The candidates: the row's logits with OpenAI's penalties (presence once, frequency per
// occurrence, over the generated tokens) and the logit biases applied.
void SeqSampler::fill(const float * logits) {
    cur_.resize(n_vocab_);
    for (llama_token t = 0; t < n_vocab_; t++) cur_[t] = {t, logits[t], 0.0f};
    const float pres = extras_.presence_penalty, freq = extras_.frequency_penalty;
    if (pres != 0.0f || freq != 0.0f) {
        for (const auto & [t, n] : counts_) cur_[t].logit -= pres + freq * static_cast<float>(n);
    }
    for (const auto & [t, bias] : extras_.logit_bias) cur_[t].logit += bias;
}

llama_token SeqSampler::choose(std::vector<llama_token_data> & cur) {
    llama_token_data_array arr{cur.data(), cur.size(), -1, false};
    if (chain_) {
        llama_sampler_apply(chain_, &arr);
        return arr.selected >= 0 ? arr.data[arr.selected].id : LLAMA_TOKEN_NULL;
    }
    // Greedy: the first of equal maxima, as the engine's argmax; none when every candidate is banned.
    size_t best = 0;
    for (size_t i = 1; i < arr.size; i++) {
        if (arr.data[i].logit > arr.data[best].logit) best = i;
    }
    return std::isinf(arr.data[best].logit) && arr.data[best].logit < 0 ? LLAMA_TOKEN_NULL : arr.data[best].id;
}

bool SeqSampler::grammar_allows(llama_token t) {
    llama_token_data one{t, 1.0f, 0.0f};
    llama_token_data_array arr{&one, 1, -1, false};
    llama_sampler_apply(grammar_, &arr);
    return !std::isinf(one.logit);
}

llama_token SeqSampler::sample(const float * logits) {
    fill(logits);
    llama_token t = choose(cur_);
    // As llama.cpp's common sampler: the grammar checks the chosen token first (one token), and
    // only when it refuses is it applied to the whole vocabulary (slow on 262K tokens) and the
    // token chosen again.
    if (grammar_ && (t == LLAMA_TOKEN_NULL || !grammar_allows(t))) {
        fill(logits);
        llama_token_data_array arr{cur_.data(), cur_.size(), -1, false};
        llama_sampler_apply(grammar_, &arr);
        t = choose(cur_);
    }
    // Nothing allowed (a grammar at a dead end): end the generation.
    if (t == LLAMA_TOKEN_NULL) t = llama_vocab_eos(vocab_) >= 0 ? llama_vocab_eos(vocab_) : llama_vocab_eot(vocab_);
    if (grammar_ && !llama_vocab_is_eog(vocab_, t)) {
        try {
            llama_sampler_accept(grammar_, t);
        } catch (...) {
            t = llama_vocab_eos(vocab_);
        }
    }
    if (chain_) llama_sampler_accept(chain_, t);
    counts_[t]++;
    if (extras_.logprobs >= 0) record(logits, t);
    return t;
}

void SeqSampler::record(const float * logits, llama_token chosen) {
    float max = logits[0];
    for (int32_t t = 1; t < n_vocab_; t++) max = std::max(max, logits[t]);
    double sum = 0;
    for (int32_t t = 0; t < n_vocab_; t++) sum += std::exp(static_cast<double>(logits[t] - max));
    const float lse = max + static_cast<float>(std::log(sum));
    TokenLogprob lp{chosen, logits[chosen] - lse, {}};
    const int32_t k = std::min(extras_.logprobs, n_vocab_);
    if (k > 0) {
        std::vector<llama_token> ids(n_vocab_);
        std::iota(ids.begin(), ids.end(), 0);
        std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [logits](llama_token a, llama_token b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
        for (int32_t i = 0; i < k; i++) lp.top.emplace_back(ids[i], logits[ids[i]] - lse);
    }
    logprobs_.push_back(std::move(lp));
}

std::vector<TokenLogprob> SeqSampler::take_logprobs() {
    std::vector<TokenLogprob> out;
    out.swap(logprobs_);
    return out;
}

}  // namespace llmfleet
