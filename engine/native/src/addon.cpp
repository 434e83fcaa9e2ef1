// N-API bindings for llmfleet::Engine (see addon.h). Long work (load, step, state export, the
// decode-loop diagnostic) runs on a worker thread and returns a Promise; the JavaScript side
// (engine/runtime/native-runtime.ts) keeps at most one call in flight per engine.
#include "addon.h"
#include "kv-stream.h"

namespace llmfleet_addon {

Napi::Function NativeEngine::Define(Napi::Env env) {
    return DefineClass(env, "NativeEngine",
                       {
                           InstanceMethod("info", &NativeEngine::Info),
                           InstanceMethod("step", &NativeEngine::Step),
                           InstanceMethod("setSampler", &NativeEngine::SetSampler),
                           InstanceMethod("tokenize", &NativeEngine::Tokenize),
                           InstanceMethod("detokenize", &NativeEngine::Detokenize),
                           InstanceMethod("isEog", &NativeEngine::IsEog),
                           InstanceMethod("applyChatTemplate", &NativeEngine::ApplyChatTemplate),
                           InstanceMethod("seqRm", &NativeEngine::SeqRm),
                           InstanceMethod("seqCp", &NativeEngine::SeqCp),
                           InstanceMethod("seqAdd", &NativeEngine::SeqAdd),
                           InstanceMethod("evalLogits", &NativeEngine::EvalLogits),
                           InstanceMethod("seqPosMax", &NativeEngine::SeqPosMax),
                           InstanceMethod("stateGetFile", &NativeEngine::StateGetFile),
                           InstanceMethod("stateSetFile", &NativeEngine::StateSetFile),
                           InstanceMethod("stateSetFileDetached", &NativeEngine::StateSetFileDetached),
                           InstanceMethod("copiesDone", &NativeEngine::CopiesDone),
                           InstanceMethod("stateSizeOf", &NativeEngine::StateSizeOf),
                           InstanceMethod("stateGetShared", &NativeEngine::StateGetShared),
                           InstanceMethod("stateSetShared", &NativeEngine::StateSetShared),
                           InstanceMethod("dispose", &NativeEngine::Dispose),
                           InstanceMethod("synchronize", &NativeEngine::Synchronize),
                           InstanceMethod("exportStats", &NativeEngine::ExportStats),
                           InstanceMethod("importStats", &NativeEngine::ImportStats),
                           InstanceMethod("decodeLoop", &NativeEngine::DecodeLoop),
                           InstanceMethod("setExtras", &NativeEngine::SetExtras),
                           InstanceMethod("takeLogprobs", &NativeEngine::TakeLogprobs),
                       });
}

NativeEngine::NativeEngine(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeEngine>(info) {
    if (info.Length() < 1 || !info[0].IsExternal()) {
        Napi::TypeError::New(info.Env(), "NativeEngine is made by load(), not by new").ThrowAsJavaScriptException();
        return;
    }
    auto * holder = info[0].As<Napi::External<std::unique_ptr<Engine>>>().Data();
    engine_ = std::move(*holder);
    delete holder;
}

Engine * NativeEngine::engine(Napi::Env env, Use use) {
    if (!engine_ || disposing_) {
        Napi::Error::New(env, "native engine is disposed").ThrowAsJavaScriptException();
        return nullptr;
    }
    if (use == Use::Context && inflight_ > 0) {
        Napi::Error::New(env, "native engine is busy: a call is still running on its context (calls must be serialised)").ThrowAsJavaScriptException();
        return nullptr;
    }
    return engine_.get();
}

void NativeEngine::finished() {
    inflight_--;
    finished_waiting();
}

void NativeEngine::finished_waiting() {
    if (!disposing_ || inflight_ > 0 || waiting_ > 0 || !engine_) return;
    engine_.reset();
    for (auto & d : dispose_waiters_) d.Resolve(Env().Undefined());
    dispose_waiters_.clear();
}

bool NativeEngine::check_seq(Napi::Env env, int32_t seq, const char * name) {
    const int32_t n = static_cast<int32_t>(engine_->n_seq_max());
    if (seq >= 0 && seq < n) return true;
    return throw_range(env, std::string(name) + " = " + std::to_string(seq) + " is not a sequence of this engine (0.." + std::to_string(n - 1) + ")");
}

// dispose() -> Promise<void>: refuses new calls at once, frees the model and context once the
// calls in flight have settled. A second call waits for the same.
Napi::Value NativeEngine::Dispose(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto d = Napi::Promise::Deferred::New(env);
    disposing_ = true;
    if (inflight_ == 0 && waiting_ == 0) {
        engine_.reset();
        d.Resolve(env.Undefined());
    } else {
        dispose_waiters_.push_back(d);
    }
    return d.Promise();
}

Napi::Value NativeEngine::Info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Read);
    if (!e) return env.Undefined();
    Napi::Object o = Napi::Object::New(env);
    o.Set("nCtx", e->n_ctx());
    o.Set("nCtxSeq", e->n_ctx_seq());
    o.Set("nSeqMax", e->n_seq_max());
    o.Set("nVocab", e->n_vocab());
    o.Set("nEmbd", e->n_embd());
    o.Set("modelBytes", static_cast<double>(e->model_bytes()));
    o.Set("modelParams", static_cast<double>(e->model_params()));
    o.Set("description", e->description());
    o.Set("flashAttention", e->flash_attention());
    o.Set("kvUnified", e->kv_unified());
    o.Set("gpu", e->on_gpu());
    o.Set("bos", e->bos());
    o.Set("graphsReused", e->graphs_reused());
    o.Set("pipeline", e->pipelined());
    o.Set("deviceGreedy", e->device_greedy());
    o.Set("speculatedUsed", static_cast<double>(e->speculated_used()));
    o.Set("speculatedDropped", static_cast<double>(e->speculated_dropped()));
    o.Set("sampleSeconds", e->sample_seconds());
    return o;
}

namespace {

Napi::Int32Array to_int32_array(Napi::Env env, const std::vector<llama_token> & v) {
    Napi::Int32Array out = Napi::Int32Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++) out[i] = v[i];
    return out;
}

// The step's input from its arrays, checked: equal lengths, counts >= 0 adding up to the tokens,
// sequences of this engine, positions >= 0, token ids of the vocabulary.
bool step_input(const Napi::CallbackInfo & info, const Engine & e, llmfleet::StepInput & in) {
    Napi::Env env = info.Env();
    Napi::Int32Array seqs, pos0, counts, tokens;
    Napi::Uint8Array sample;
    if (!arg_typed(info, 0, "seqs", napi_int32_array, "Int32Array", seqs) || !arg_typed(info, 1, "pos0", napi_int32_array, "Int32Array", pos0) ||
        !arg_typed(info, 2, "counts", napi_int32_array, "Int32Array", counts) || !arg_typed(info, 3, "tokens", napi_int32_array, "Int32Array", tokens) ||
        !arg_typed(info, 4, "sample", napi_uint8_array, "Uint8Array", sample)) {
        return false;
    }
    const size_t n = seqs.ElementLength();
    if (pos0.ElementLength() != n || counts.ElementLength() != n || sample.ElementLength() != n) {
        return throw_range(env, "step: seqs, pos0, counts and sample must have the same length");
    }
    in.lookahead = 1;
    if (info.Length() > 5 && !info[5].IsUndefined() && !arg_int(info, 5, "lookahead", 1, 256, in.lookahead)) return false;
    const int32_t n_seq = static_cast<int32_t>(e.n_seq_max());
    int64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        if (seqs[i] < 0 || seqs[i] >= n_seq) return throw_range(env, "step: seqs[" + std::to_string(i) + "] is not a sequence of this engine");
        if (pos0[i] < 0 || counts[i] < 0) return throw_range(env, "step: pos0 and counts must be >= 0 (entry " + std::to_string(i) + ")");
        if (sample[i] > 2) return throw_range(env, "step: sample[" + std::to_string(i) + "] must be 0, 1 or 2");
        in.entries.push_back({seqs[i], pos0[i], static_cast<int32_t>(offset), counts[i], sample[i] != 0, sample[i] == 2});
        offset += counts[i];
    }
    if (offset != static_cast<int64_t>(tokens.ElementLength())) return throw_range(env, "step: counts do not add up to tokens.length");
    if (!check_tokens(env, tokens.Data(), tokens.ElementLength(), e.n_vocab(), "tokens")) return false;
    in.tokens.assign(tokens.Data(), tokens.Data() + tokens.ElementLength());
    return true;
}

}  // namespace

// step(seqs, pos0, counts, tokens, sample, lookahead?) -> Promise<Int32Array> of lookahead tokens per entry (-1 = none)
Napi::Value NativeEngine::Step(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    if (!e) return env.Undefined();
    auto in = std::make_shared<llmfleet::StepInput>();
    if (!step_input(info, *e, *in)) return env.Undefined();
    return run<std::vector<llama_token>>(
        env, [e, in](std::string & error) { return e->step(*in, error); },
        [](Napi::Env env, std::vector<llama_token> & out) -> Napi::Value { return to_int32_array(env, out); });
}

// setSampler(seq, temperature, topK, topP, seed?)
Napi::Value NativeEngine::SetSampler(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    if (!e) return env.Undefined();
    int32_t seq = 0, top_k = 0;
    double temperature = 0, top_p = 1, seed = 0xFFFFFFFF;
    if (!arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq") || !arg_number(info, 1, "temperature", 0, 1e6, temperature) ||
        !arg_int(info, 2, "topK", 0, kMaxI32, top_k) || !arg_number(info, 3, "topP", 0, 1, top_p)) {
        return env.Undefined();
    }
    if (info.Length() > 4 && !info[4].IsUndefined() && !arg_number(info, 4, "seed", 0, 4294967295.0, seed)) return env.Undefined();
    llmfleet::SamplerConfig cfg;
    cfg.temperature = static_cast<float>(temperature);
    cfg.top_k = top_k;
    cfg.top_p = static_cast<float>(top_p);
    cfg.seed = static_cast<uint32_t>(seed);
    e->set_sampler(seq, cfg);
    return env.Undefined();
}

Napi::Value NativeEngine::Tokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Read);
    std::string text;
    bool add_special = false, parse_special = false;
    if (!e || !arg_string(info, 0, "text", text) || !arg_bool(info, 1, "addSpecial", add_special) || !arg_bool(info, 2, "parseSpecial", parse_special)) {
        return env.Undefined();
    }
    return to_int32_array(env, e->tokenize(text, add_special, parse_special));
}

Napi::Value NativeEngine::Detokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Read);
    Napi::Int32Array tokens;
    if (!e || !arg_typed(info, 0, "tokens", napi_int32_array, "Int32Array", tokens)) return env.Undefined();
    if (!check_tokens(env, tokens.Data(), tokens.ElementLength(), e->n_vocab(), "tokens")) return env.Undefined();
    bool unparse_special = false;
    if (info.Length() > 1 && !info[1].IsUndefined() && !arg_bool(info, 1, "unparseSpecial", unparse_special)) return env.Undefined();
    const std::vector<llama_token> v(tokens.Data(), tokens.Data() + tokens.ElementLength());
    return Napi::String::New(env, e->detokenize(v, unparse_special));
}

Napi::Value NativeEngine::IsEog(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Read);
    int32_t token = 0;
    if (!e || !arg_int(info, 0, "token", 0, e->n_vocab() - 1, token)) return env.Undefined();
    return Napi::Boolean::New(env, e->is_eog(token));
}

Napi::Value NativeEngine::ApplyChatTemplate(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Read);
    std::vector<std::string> roles, contents;
    if (!e || !arg_string_array(info, 0, "roles", roles) || !arg_string_array(info, 1, "contents", contents)) return env.Undefined();
    if (roles.size() != contents.size()) {
        throw_range(env, "roles and contents must have the same length");
        return env.Undefined();
    }
    const std::string out = e->apply_chat_template(roles, contents);
    if (out.empty()) return env.Null();
    return Napi::String::New(env, out);
}

// seqRm(seq, p0, p1): positions [p0, p1) of seq; -1 for either bound means open-ended.
Napi::Value NativeEngine::SeqRm(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t seq = 0, p0 = 0, p1 = 0;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq") || !arg_int(info, 1, "p0", -1, kMaxI32, p0) ||
        !arg_int(info, 2, "p1", -1, kMaxI32, p1)) {
        return env.Undefined();
    }
    return Napi::Boolean::New(env, e->seq_rm(seq, p0, p1));
}

Napi::Value NativeEngine::SeqCp(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t src = 0, dst = 0, p0 = 0, p1 = 0;
    if (!e || !arg_int(info, 0, "src", 0, kMaxI32, src) || !check_seq(env, src, "src") || !arg_int(info, 1, "dst", 0, kMaxI32, dst) ||
        !check_seq(env, dst, "dst") || !arg_int(info, 2, "p0", -1, kMaxI32, p0) || !arg_int(info, 3, "p1", -1, kMaxI32, p1)) {
        return env.Undefined();
    }
    e->seq_cp(src, dst, p0, p1);
    return env.Undefined();
}

// seqAdd(seq, p0, p1, delta) -> boolean: moves the sequence's cells in [p0, p1) (-1: open) by delta
// positions; false when the model's memory cannot shift.
Napi::Value NativeEngine::SeqAdd(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t seq = 0, p0 = 0, p1 = 0, delta = 0;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq") || !arg_int(info, 1, "p0", -1, kMaxI32, p0) ||
        !arg_int(info, 2, "p1", -1, kMaxI32, p1) || !arg_int(info, 3, "delta", -kMaxI32, kMaxI32, delta)) {
        return env.Undefined();
    }
    return Napi::Boolean::New(env, e->seq_add(seq, p0, p1, delta));
}

// evalLogits(seq, pos0, tokens: Int32Array) -> Promise<Float32Array> (tokens x nVocab): every
// position's logits of a replayed token run (diagnostics: the benchmarks' quality measures).
Napi::Value NativeEngine::EvalLogits(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t seq = 0, pos0 = 0;
    Napi::Int32Array tokens;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq") || !arg_int(info, 1, "pos0", 0, kMaxI32, pos0) ||
        !arg_typed(info, 2, "tokens", napi_int32_array, "Int32Array", tokens)) {
        return env.Undefined();
    }
    if (!check_tokens(env, tokens.Data(), tokens.ElementLength(), e->n_vocab(), "tokens")) return env.Undefined();
    std::vector<llama_token> t(tokens.Data(), tokens.Data() + tokens.ElementLength());
    return run<std::vector<float>>(
        env, [e, seq, pos0, t](std::string & error) { return e->eval_logits(seq, pos0, t, error); },
        [](Napi::Env env, std::vector<float> & v) -> Napi::Value {
            Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
            std::copy(v.begin(), v.end(), a.Data());
            return a;
        });
}

Napi::Value NativeEngine::SeqPosMax(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t seq = 0;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq")) return env.Undefined();
    return Napi::Number::New(env, e->seq_pos_max(seq));
}

Napi::Value NativeEngine::Synchronize(const Napi::CallbackInfo & info) {
    Engine * e = engine(info.Env(), Use::Context);
    if (e) e->synchronize();
    return info.Env().Undefined();
}

// exportStats() -> {exports, copies, waitSeconds, copySeconds}: totals over state exports (Engine::export_stats).
Napi::Value NativeEngine::ExportStats(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Read);
    if (!e) return env.Undefined();
    const Engine::ExportStats s = e->export_stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("exports", static_cast<double>(s.exports));
    o.Set("copies", static_cast<double>(s.copies));
    o.Set("waitSeconds", s.wait_seconds);
    o.Set("copySeconds", s.copy_seconds);
    return o;
}

// importStats() -> {imports, copies, seconds}: totals over state imports (Engine::import_stats).
Napi::Value NativeEngine::ImportStats(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Read);
    if (!e) return env.Undefined();
    const Engine::ImportStats s = e->import_stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("imports", static_cast<double>(s.imports));
    o.Set("copies", static_cast<double>(s.copies));
    o.Set("seconds", s.seconds);
    return o;
}

// decodeLoop(seq, pos0, firstToken, n, mode?) -> Promise<seconds per step>: greedy decode in C++ only (diagnostics).
Napi::Value NativeEngine::DecodeLoop(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t seq = 0, pos0 = 0, first = 0, n = 0, mode = 0;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq") || !arg_int(info, 1, "pos0", 0, kMaxI32, pos0) ||
        !arg_int(info, 2, "firstToken", 0, e->n_vocab() - 1, first) || !arg_int(info, 3, "n", 0, 1 << 20, n)) {
        return env.Undefined();
    }
    if (info.Length() > 4 && !info[4].IsUndefined() && !arg_int(info, 4, "mode", 0, 3, mode)) return env.Undefined();
    const uint32_t m = static_cast<uint32_t>(mode);
    return run<std::vector<double>>(
        env, [e, seq, pos0, first, n, m](std::string & error) { return e->decode_loop(seq, pos0, first, n, m, error); },
        [](Napi::Env env, std::vector<double> & s) -> Napi::Value {
            Napi::Array a = Napi::Array::New(env, s.size());
            for (size_t i = 0; i < s.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, s[i]));
            return a;
        });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function cls = NativeEngine::Define(env);
    env.SetInstanceData<Napi::FunctionReference>(new Napi::FunctionReference(Napi::Persistent(cls)));
    exports.Set("NativeEngine", cls);
    exports.Set("load", Napi::Function::New(env, Load));
    InitKvStream(env, exports);
    InitKvCodec(env, exports);
    InitShared(env, exports);
    return exports;
}

}  // namespace llmfleet_addon

namespace {
Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return llmfleet_addon::Init(env, exports); }
}  // namespace

NODE_API_MODULE(llmfleet_native, InitModule)
