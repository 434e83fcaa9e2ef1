// N-API bindings for llmfleet::Engine. Long work (load, step, state get/set) runs on a worker
// thread and returns a Promise; the JavaScript side (engine/runtime/native-runtime.ts) keeps at
// most one call in flight per engine.
#include <napi.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine.h"

namespace {

using llmfleet::Engine;

class NativeEngine : public Napi::ObjectWrap<NativeEngine> {
public:
    static Napi::FunctionReference * constructor;

    static Napi::Function Define(Napi::Env env) {
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
                               InstanceMethod("seqPosMax", &NativeEngine::SeqPosMax),
                               InstanceMethod("stateGetFile", &NativeEngine::StateGetFile),
                               InstanceMethod("stateSetFile", &NativeEngine::StateSetFile),
                               InstanceMethod("dispose", &NativeEngine::Dispose),
                               InstanceMethod("synchronize", &NativeEngine::Synchronize),
                               InstanceMethod("decodeLoop", &NativeEngine::DecodeLoop),
                           });
    }

    explicit NativeEngine(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeEngine>(info) {
        auto * holder = info[0].As<Napi::External<std::unique_ptr<Engine>>>().Data();
        engine_ = std::move(*holder);
        delete holder;
    }

    Engine * engine(Napi::Env env) {
        if (!engine_) Napi::Error::New(env, "native engine is disposed").ThrowAsJavaScriptException();
        return engine_.get();
    }

private:
    Napi::Value Info(const Napi::CallbackInfo & info);
    Napi::Value Step(const Napi::CallbackInfo & info);
    Napi::Value SetSampler(const Napi::CallbackInfo & info);
    Napi::Value Tokenize(const Napi::CallbackInfo & info);
    Napi::Value Detokenize(const Napi::CallbackInfo & info);
    Napi::Value IsEog(const Napi::CallbackInfo & info);
    Napi::Value ApplyChatTemplate(const Napi::CallbackInfo & info);
    Napi::Value SeqRm(const Napi::CallbackInfo & info);
    Napi::Value SeqCp(const Napi::CallbackInfo & info);
    Napi::Value SeqPosMax(const Napi::CallbackInfo & info);
    Napi::Value StateGetFile(const Napi::CallbackInfo & info);
    Napi::Value StateSetFile(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);
    Napi::Value Synchronize(const Napi::CallbackInfo & info);
    Napi::Value DecodeLoop(const Napi::CallbackInfo & info);

    std::unique_ptr<Engine> engine_;
};

Napi::FunctionReference * NativeEngine::constructor = nullptr;

// Runs fn on a worker thread; resolves with toJs(result) or rejects with the error string.
template <typename Result>
class PromiseWorker : public Napi::AsyncWorker {
public:
    using Work = std::function<Result(std::string &)>;
    using ToJs = std::function<Napi::Value(Napi::Env, Result &)>;

    PromiseWorker(Napi::Env env, Work work, ToJs to_js)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), to_js_(std::move(to_js)) {}

    Napi::Promise Promise() { return deferred_.Promise(); }

    void Execute() override {
        std::string error;
        result_ = work_(error);
        if (!error.empty()) SetError(error);
    }
    void OnOK() override { deferred_.Resolve(to_js_(Env(), result_)); }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

private:
    Napi::Promise::Deferred deferred_;
    Work work_;
    ToJs to_js_;
    Result result_{};
};

template <typename Result>
Napi::Value queue(Napi::Env env, typename PromiseWorker<Result>::Work work, typename PromiseWorker<Result>::ToJs to_js) {
    auto * w = new PromiseWorker<Result>(env, std::move(work), std::move(to_js));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
}

Napi::Int32Array toInt32Array(Napi::Env env, const std::vector<llama_token> & v) {
    Napi::Int32Array out = Napi::Int32Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++) out[i] = v[i];
    return out;
}

std::vector<llama_token> fromInt32Array(const Napi::Value & v) {
    Napi::Int32Array a = v.As<Napi::Int32Array>();
    return std::vector<llama_token>(a.Data(), a.Data() + a.ElementLength());
}

uint32_t optU32(const Napi::Object & o, const char * key, uint32_t def) {
    return o.Has(key) && o.Get(key).IsNumber() ? o.Get(key).As<Napi::Number>().Uint32Value() : def;
}
int32_t optI32(const Napi::Object & o, const char * key, int32_t def) {
    return o.Has(key) && o.Get(key).IsNumber() ? o.Get(key).As<Napi::Number>().Int32Value() : def;
}
bool optBool(const Napi::Object & o, const char * key, bool def) {
    return o.Has(key) && o.Get(key).IsBoolean() ? o.Get(key).As<Napi::Boolean>().Value() : def;
}

Napi::Value Load(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) {
        Napi::TypeError::New(env, "load(modelPath: string, options: object)").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    llmfleet::EngineOptions opts;
    opts.model_path = info[0].As<Napi::String>().Utf8Value();
    Napi::Object o = info[1].As<Napi::Object>();
    opts.gpu_layers = optI32(o, "gpuLayers", 0);
    opts.context_size = optU32(o, "contextSize", 0);
    opts.sequences = optU32(o, "sequences", 1);
    opts.batch_size = optU32(o, "batchSize", 512);
    opts.ubatch_size = optU32(o, "ubatchSize", opts.batch_size);
    opts.threads = optI32(o, "threads", 4);
    opts.flash_attention = optBool(o, "flashAttention", false);
    opts.kv_unified = optBool(o, "kvUnified", true);
    opts.swa_full = optBool(o, "swaFull", true);
    opts.gpu_embeddings = optBool(o, "gpuEmbeddings", true);
    opts.device_greedy = optBool(o, "deviceGreedy", false) ? 1 : 0;
    opts.pipeline = o.Has("pipeline") && o.Get("pipeline").IsBoolean() ? (o.Get("pipeline").As<Napi::Boolean>().Value() ? 1 : 0) : -1;
    using Holder = std::unique_ptr<Engine>;
    return queue<std::shared_ptr<Holder>>(
        env,
        [opts](std::string & error) {
            auto h = std::make_shared<Holder>(Engine::load(opts, error));
            return h;
        },
        [](Napi::Env env, std::shared_ptr<Holder> & h) -> Napi::Value {
            auto * heap = new Holder(std::move(*h));
            return NativeEngine::constructor->New({Napi::External<Holder>::New(env, heap)});
        });
}

Napi::Value NativeEngine::Info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env);
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

// step(seqs, pos0, counts, tokens, sample, lookahead): Int32Array x4 + Uint8Array + number
//   -> Promise<Int32Array> of lookahead tokens per entry (-1 = none)
Napi::Value NativeEngine::Step(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env);
    if (!e) return env.Undefined();
    Napi::Int32Array seqs = info[0].As<Napi::Int32Array>();
    Napi::Int32Array pos0 = info[1].As<Napi::Int32Array>();
    Napi::Int32Array counts = info[2].As<Napi::Int32Array>();
    Napi::Uint8Array sample = info[4].As<Napi::Uint8Array>();
    auto in = std::make_shared<llmfleet::StepInput>();
    in->tokens = fromInt32Array(info[3]);
    if (info.Length() > 5 && info[5].IsNumber()) in->lookahead = info[5].As<Napi::Number>().Int32Value();
    int32_t offset = 0;
    for (size_t i = 0; i < seqs.ElementLength(); i++) {
        in->entries.push_back({seqs[i], pos0[i], offset, counts[i], sample[i] != 0});
        offset += counts[i];
    }
    if (offset != static_cast<int32_t>(in->tokens.size())) {
        Napi::RangeError::New(env, "step: counts do not add up to tokens.length").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    return queue<std::vector<llama_token>>(
        env, [e, in](std::string & error) { return e->step(*in, error); },
        [](Napi::Env env, std::vector<llama_token> & out) -> Napi::Value { return toInt32Array(env, out); });
}

Napi::Value NativeEngine::SetSampler(const Napi::CallbackInfo & info) {
    Engine * e = engine(info.Env());
    if (!e) return info.Env().Undefined();
    llmfleet::SamplerConfig cfg;
    const int32_t seq = info[0].As<Napi::Number>().Int32Value();
    cfg.temperature = info[1].As<Napi::Number>().FloatValue();
    cfg.top_k = info[2].As<Napi::Number>().Int32Value();
    cfg.top_p = info[3].As<Napi::Number>().FloatValue();
    if (info.Length() > 4 && info[4].IsNumber()) cfg.seed = info[4].As<Napi::Number>().Uint32Value();
    e->set_sampler(seq, cfg);
    return info.Env().Undefined();
}

Napi::Value NativeEngine::Tokenize(const Napi::CallbackInfo & info) {
    Engine * e = engine(info.Env());
    if (!e) return info.Env().Undefined();
    const std::string text = info[0].As<Napi::String>().Utf8Value();
    const bool add_special = info[1].As<Napi::Boolean>().Value();
    const bool parse_special = info[2].As<Napi::Boolean>().Value();
    return toInt32Array(info.Env(), e->tokenize(text, add_special, parse_special));
}

Napi::Value NativeEngine::Detokenize(const Napi::CallbackInfo & info) {
    Engine * e = engine(info.Env());
    if (!e) return info.Env().Undefined();
    const bool unparse_special = info.Length() > 1 && info[1].As<Napi::Boolean>().Value();
    return Napi::String::New(info.Env(), e->detokenize(fromInt32Array(info[0]), unparse_special));
}

Napi::Value NativeEngine::IsEog(const Napi::CallbackInfo & info) {
    Engine * e = engine(info.Env());
    if (!e) return info.Env().Undefined();
    return Napi::Boolean::New(info.Env(), e->is_eog(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Value NativeEngine::ApplyChatTemplate(const Napi::CallbackInfo & info) {
    Engine * e = engine(info.Env());
    if (!e) return info.Env().Undefined();
    Napi::Array roles = info[0].As<Napi::Array>();
    Napi::Array contents = info[1].As<Napi::Array>();
    std::vector<std::string> r, c;
    for (uint32_t i = 0; i < roles.Length(); i++) {
        r.push_back(roles.Get(i).As<Napi::String>().Utf8Value());
        c.push_back(contents.Get(i).As<Napi::String>().Utf8Value());
    }
    const std::string out = e->apply_chat_template(r, c);
    if (out.empty()) return info.Env().Null();
    return Napi::String::New(info.Env(), out);
}

Napi::Value NativeEngine::SeqRm(const Napi::CallbackInfo & info) {
    Engine * e = engine(info.Env());
    if (!e) return info.Env().Undefined();
    const bool ok = e->seq_rm(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(), info[2].As<Napi::Number>().Int32Value());
    return Napi::Boolean::New(info.Env(), ok);
}

Napi::Value NativeEngine::SeqCp(const Napi::CallbackInfo & info) {
    Engine * e = engine(info.Env());
    if (!e) return info.Env().Undefined();
    e->seq_cp(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(), info[2].As<Napi::Number>().Int32Value(),
              info[3].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
}

Napi::Value NativeEngine::SeqPosMax(const Napi::CallbackInfo & info) {
    Engine * e = engine(info.Env());
    if (!e) return info.Env().Undefined();
    return Napi::Number::New(info.Env(), e->seq_pos_max(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Value NativeEngine::Synchronize(const Napi::CallbackInfo & info) {
    Engine * e = engine(info.Env());
    if (e) e->synchronize();
    return info.Env().Undefined();
}

// decodeLoop(seq, pos0, firstToken, n, mode?) -> Promise<seconds per step>: greedy decode in C++ only (diagnostics).
Napi::Value NativeEngine::DecodeLoop(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env);
    if (!e) return env.Undefined();
    const int32_t seq = info[0].As<Napi::Number>().Int32Value();
    const int32_t pos0 = info[1].As<Napi::Number>().Int32Value();
    const int32_t first = info[2].As<Napi::Number>().Int32Value();
    const int32_t n = info[3].As<Napi::Number>().Int32Value();
    const uint32_t mode = info.Length() > 4 && info[4].IsNumber() ? info[4].As<Napi::Number>().Uint32Value() : 0;
    return queue<std::vector<double>>(
        env, [e, seq, pos0, first, n, mode](std::string & error) { return e->decode_loop(seq, pos0, first, n, mode, error); },
        [](Napi::Env env, std::vector<double> & s) -> Napi::Value {
            Napi::Array a = Napi::Array::New(env, s.size());
            for (size_t i = 0; i < s.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, s[i]));
            return a;
        });
}

// A GPU state goes into page-locked host memory (the GPU backend's host buffer type): the copy
// from the device then runs at bus speed instead of through the driver's pageable staging, and a
// later import of the same buffer (a host-memory copy of a context) does too. The buffer is freed
// when JavaScript drops it; V8 is told of its size so that it collects it in time.
uint8_t * alloc_pinned(size_t n, ggml_backend_buffer_t * out) {
    ggml_backend_dev_t gpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
    ggml_backend_buffer_type_t buft = gpu ? ggml_backend_dev_host_buffer_type(gpu) : nullptr;
    ggml_backend_buffer_t b = buft ? ggml_backend_buft_alloc_buffer(buft, n) : nullptr;
    if (!b) return nullptr;
    *out = b;
    return static_cast<uint8_t *>(ggml_backend_buffer_get_base(b));
}

Napi::Buffer<uint8_t> state_buffer(Napi::Env env, size_t n, bool gpu) {
    ggml_backend_buffer_t pinned = nullptr;
    uint8_t * base = gpu ? alloc_pinned(n, &pinned) : nullptr;
    if (!base) return Napi::Buffer<uint8_t>::New(env, n);
    Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(n));
    return Napi::Buffer<uint8_t>::New(
        env, base, n,
        [n](Napi::Env e, uint8_t *, ggml_backend_buffer * b) {
            ggml_backend_buffer_free(b);
            Napi::MemoryManagement::AdjustExternalMemory(e, -static_cast<int64_t>(n));
        },
        pinned);
}

// The sequence state in llama.cpp's file format (what llama_state_seq_save_file writes: "ggsq",
// version, token count, tokens, state) in ONE allocation with no copy: llama.cpp writes its
// 8-byte io header (magic, seq id) into the last 8 bytes of the token area, which the file
// header and tokens then overwrite.
constexpr uint32_t GGSQ_MAGIC = 0x67677371;
constexpr uint32_t GGSQ_VERSION = 3;
constexpr uint32_t IO_MAGIC = 0xaf143cd8;

Napi::Value NativeEngine::StateGetFile(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env);
    if (!e) return env.Undefined();
    const int32_t seq = info[0].As<Napi::Number>().Int32Value();
    const std::vector<llama_token> tokens = fromInt32Array(info[1]);
    const size_t head = 12 + 4 * tokens.size();
    const size_t size = e->state_size(seq);
    Napi::Buffer<uint8_t> buf = state_buffer(env, head - 8 + size, e->on_gpu());
    auto ref = std::make_shared<Napi::Reference<Napi::Buffer<uint8_t>>>(Napi::Persistent(buf));
    uint8_t * dst = buf.Data() + head - 8;
    return queue<size_t>(
        env,
        [e, seq, dst, size](std::string & error) {
            const size_t n = e->state_get_into(seq, dst, size);
            if (n != size) error = "llama.cpp wrote " + std::to_string(n) + " state bytes, expected " + std::to_string(size);
            return n;
        },
        [ref, tokens](Napi::Env, size_t &) -> Napi::Value {
            Napi::Buffer<uint8_t> b = ref->Value();
            uint8_t * p = b.Data();
            const uint32_t words[3] = {GGSQ_MAGIC, GGSQ_VERSION, static_cast<uint32_t>(tokens.size())};
            std::memcpy(p, words, sizeof(words));
            std::memcpy(p + 12, tokens.data(), 4 * tokens.size());
            return b;
        });
}

// Loads a state in the file format. Synchronous (the caller holds the engine exclusively): the 8
// bytes before the state are swapped for llama.cpp's io header for the call and restored, so no
// copy of a (possibly GB-sized) state is made and no JavaScript can see the swap.
Napi::Value NativeEngine::StateSetFile(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env);
    if (!e) return env.Undefined();
    const int32_t seq = info[0].As<Napi::Number>().Int32Value();
    Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
    uint8_t * p = buf.Data();
    const size_t len = buf.Length();
    uint32_t words[3] = {0, 0, 0};
    if (len >= 12) std::memcpy(words, p, sizeof(words));
    const size_t head = 12 + 4 * static_cast<size_t>(words[2]);
    if (len < 12 || words[0] != GGSQ_MAGIC || words[1] != GGSQ_VERSION || head > len) {
        Napi::Error::New(env, "not a llama.cpp sequence state file (magic, version or size)").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    uint8_t saved[8];
    std::memcpy(saved, p + head - 8, 8);
    const uint32_t io[2] = {IO_MAGIC, static_cast<uint32_t>(seq)};
    std::memcpy(p + head - 8, io, 8);
    const size_t n = e->state_set(seq, p + head - 8, len - head + 8);
    std::memcpy(p + head - 8, saved, 8);
    if (n == 0) {
        Napi::Error::New(env, "llama.cpp rejected the sequence state (wrong model, layout or size)").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    return Napi::Number::New(env, static_cast<double>(n));
}

Napi::Value NativeEngine::Dispose(const Napi::CallbackInfo & info) {
    engine_.reset();
    return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function cls = NativeEngine::Define(env);
    NativeEngine::constructor = new Napi::FunctionReference(Napi::Persistent(cls));
    exports.Set("NativeEngine", cls);
    exports.Set("load", Napi::Function::New(env, Load));
    return exports;
}

}  // namespace

NODE_API_MODULE(llmfleet_native, Init)
