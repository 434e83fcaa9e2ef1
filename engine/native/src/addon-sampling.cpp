// N-API bindings of a sequence's sampling extras (engine-sampling.h): OpenAI's penalties, logit
// biases, a grammar, logprobs.
#include "addon.h"

namespace llmfleet_addon {

// setExtras(seq, presencePenalty, frequencyPenalty, biasTokens: Int32Array, biases: Float32Array,
// grammar: string, logprobs: -1..20): after setSampler, which resets them.
Napi::Value NativeEngine::SetExtras(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    if (!e) return env.Undefined();
    int32_t seq = 0, logprobs = -1;
    double presence = 0, frequency = 0;
    Napi::Int32Array bias_tokens;
    Napi::Float32Array biases;
    llmfleet::SamplingExtras extras;
    if (!arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq") || !arg_number(info, 1, "presencePenalty", -2, 2, presence) ||
        !arg_number(info, 2, "frequencyPenalty", -2, 2, frequency) || !arg_typed(info, 3, "biasTokens", napi_int32_array, "Int32Array", bias_tokens) ||
        !arg_typed(info, 4, "biases", napi_float32_array, "Float32Array", biases) || !arg_string(info, 5, "grammar", extras.grammar) ||
        !arg_int(info, 6, "logprobs", -1, 20, logprobs)) {
        return env.Undefined();
    }
    if (bias_tokens.ElementLength() != biases.ElementLength()) {
        throw_range(env, "biasTokens and biases must have the same length");
        return env.Undefined();
    }
    if (!check_tokens(env, bias_tokens.Data(), bias_tokens.ElementLength(), e->n_vocab(), "biasTokens")) return env.Undefined();
    for (size_t i = 0; i < biases.ElementLength(); i++) {
        const float b = biases[i];
        if (!(b >= -100.0f && b <= 100.0f)) {
            throw_range(env, "biases[" + std::to_string(i) + "] must be in [-100, 100]");
            return env.Undefined();
        }
        extras.logit_bias.emplace_back(bias_tokens[i], b);
    }
    extras.presence_penalty = static_cast<float>(presence);
    extras.frequency_penalty = static_cast<float>(frequency);
    extras.logprobs = logprobs;
    std::string error;
    if (!e->set_extras(seq, std::move(extras), error)) throw_range(env, "setExtras: " + error);
    return env.Undefined();
}

// takeLogprobs(seq) -> {tokens: Int32Array, logprobs: Float32Array, k, topTokens: Int32Array, topLogprobs: Float32Array}:
// the tokens sampled since the last call, each with k alternatives (row i at [i*k, (i+1)*k)).
Napi::Value NativeEngine::TakeLogprobs(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    // Read, not Context: a step of other sequences may be in flight; it never writes this one's
    // logprobs (the caller takes them between its own steps).
    Engine * e = engine(env, Use::Read);
    int32_t seq = 0;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq")) return env.Undefined();
    const std::vector<llmfleet::TokenLogprob> got = e->take_logprobs(seq);
    const size_t k = got.empty() ? 0 : got[0].top.size();
    Napi::Int32Array tokens = Napi::Int32Array::New(env, got.size());
    Napi::Float32Array logprobs = Napi::Float32Array::New(env, got.size());
    Napi::Int32Array top_tokens = Napi::Int32Array::New(env, got.size() * k);
    Napi::Float32Array top_logprobs = Napi::Float32Array::New(env, got.size() * k);
    for (size_t i = 0; i < got.size(); i++) {
        tokens[i] = got[i].token;
        logprobs[i] = got[i].logprob;
        for (size_t j = 0; j < k && j < got[i].top.size(); j++) {
            top_tokens[i * k + j] = got[i].top[j].first;
            top_logprobs[i * k + j] = got[i].top[j].second;
        }
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("tokens", tokens);
    o.Set("logprobs", logprobs);
    o.Set("k", static_cast<double>(k));
    o.Set("topTokens", top_tokens);
    o.Set("topLogprobs", top_logprobs);
    return o;
}

}  // namespace llmfleet_addon
