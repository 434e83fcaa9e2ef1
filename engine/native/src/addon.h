// N-API bindings for llmfleet::Engine: the NativeEngine class, the promise worker its long calls
// run on, and the argument checks every entry point makes before it touches the engine. The addon
// guards itself as node-llama-cpp's does (llama/addon/AddonContext.cpp): a worker holds a reference
// to its JavaScript object, dispose() waits for the calls in flight, a C++ exception in a worker
// rejects its promise, and a bad argument is a JavaScript TypeError or RangeError, never a read
// out of bounds. A call that would touch the context while a worker uses it is refused (the
// JavaScript side, engine/runtime/step-scheduler.ts, serialises them).
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine.h"

namespace llmfleet_addon {

using llmfleet::Engine;

// ---- argument checks: each throws a JavaScript error naming the argument and returns false ----

inline bool throw_type(Napi::Env env, const std::string & msg) {
    Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
    return false;
}

inline bool throw_range(Napi::Env env, const std::string & msg) {
    Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
    return false;
}

// A JavaScript number that is an integer in [min, max] (NaN, infinities and fractions are not).
inline bool is_int_in(double v, int64_t min, int64_t max) {
    return std::isfinite(v) && v == std::floor(v) && v >= static_cast<double>(min) && v <= static_cast<double>(max);
}

inline bool arg_int(const Napi::CallbackInfo & info, size_t i, const char * name, int64_t min, int64_t max, int32_t & out) {
    if (info.Length() <= i || !info[i].IsNumber()) return throw_type(info.Env(), std::string(name) + " must be a number");
    const double v = info[i].As<Napi::Number>().DoubleValue();
    if (!is_int_in(v, min, max)) {
        return throw_range(info.Env(), std::string(name) + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                                           info[i].ToString().Utf8Value());
    }
    out = static_cast<int32_t>(v);
    return true;
}

inline bool arg_number(const Napi::CallbackInfo & info, size_t i, const char * name, double min, double max, double & out) {
    if (info.Length() <= i || !info[i].IsNumber()) return throw_type(info.Env(), std::string(name) + " must be a number");
    out = info[i].As<Napi::Number>().DoubleValue();
    if (!(out >= min && out <= max)) return throw_range(info.Env(), std::string(name) + " is out of range: " + info[i].ToString().Utf8Value());
    return true;
}

inline bool arg_bool(const Napi::CallbackInfo & info, size_t i, const char * name, bool & out) {
    if (info.Length() <= i || !info[i].IsBoolean()) return throw_type(info.Env(), std::string(name) + " must be a boolean");
    out = info[i].As<Napi::Boolean>().Value();
    return true;
}

inline bool arg_string(const Napi::CallbackInfo & info, size_t i, const char * name, std::string & out) {
    if (info.Length() <= i || !info[i].IsString()) return throw_type(info.Env(), std::string(name) + " must be a string");
    out = info[i].As<Napi::String>().Utf8Value();
    return true;
}

template <typename Array>
bool arg_typed(const Napi::CallbackInfo & info, size_t i, const char * name, napi_typedarray_type type, const char * type_name, Array & out) {
    if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != type) {
        return throw_type(info.Env(), std::string(name) + " must be a " + type_name);
    }
    out = info[i].As<Array>();
    return true;
}

inline bool arg_string_array(const Napi::CallbackInfo & info, size_t i, const char * name, std::vector<std::string> & out) {
    if (info.Length() <= i || !info[i].IsArray()) return throw_type(info.Env(), std::string(name) + " must be an array of strings");
    Napi::Array a = info[i].As<Napi::Array>();
    for (uint32_t k = 0; k < a.Length(); k++) {
        Napi::Value v = a.Get(k);
        if (!v.IsString()) return throw_type(info.Env(), std::string(name) + "[" + std::to_string(k) + "] must be a string");
        out.push_back(v.As<Napi::String>().Utf8Value());
    }
    return true;
}

// Every token id in [0, n_vocab): llama.cpp indexes its tables with them unchecked.
inline bool check_tokens(Napi::Env env, const int32_t * t, size_t n, int32_t n_vocab, const char * name) {
    for (size_t k = 0; k < n; k++) {
        if (t[k] < 0 || t[k] >= n_vocab) {
            return throw_range(env, std::string(name) + "[" + std::to_string(k) + "] = " + std::to_string(t[k]) + " is not a token id (vocabulary of " +
                                        std::to_string(n_vocab) + ")");
        }
    }
    return true;
}

constexpr int64_t kMaxI32 = std::numeric_limits<int32_t>::max();

// ---- the promise worker ----

// Runs work on a worker thread; resolves with to_js(result) or rejects with the error string or
// the C++ exception's message. Holds `owner` (the NativeEngine's JavaScript object) so it cannot
// be collected mid-call, and calls `done` on the JavaScript thread once the promise is settled.
template <typename Result>
class PromiseWorker : public Napi::AsyncWorker {
public:
    using Work = std::function<Result(std::string &)>;
    using ToJs = std::function<Napi::Value(Napi::Env, Result &)>;

    PromiseWorker(Napi::Env env, Napi::Object owner, Work work, ToJs to_js, std::function<void()> done)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), to_js_(std::move(to_js)), done_(std::move(done)) {
        if (!owner.IsEmpty()) owner_ = Napi::Persistent(owner);
    }

    Napi::Promise Promise() { return deferred_.Promise(); }

    void Execute() override {
        std::string error;
        try {
            result_ = work_(error);
        } catch (const std::exception & e) {
            error = std::string("native engine error: ") + e.what();
        } catch (...) {
            error = "native engine error (unknown exception)";
        }
        if (!error.empty()) SetError(error);
    }
    void OnOK() override {
        deferred_.Resolve(to_js_(Env(), result_));
        if (done_) done_();
    }
    void OnError(const Napi::Error & e) override {
        deferred_.Reject(e.Value());
        if (done_) done_();
    }

private:
    Napi::Promise::Deferred deferred_;
    Work work_;
    ToJs to_js_;
    std::function<void()> done_;
    Napi::ObjectReference owner_;
    Result result_{};
};

template <typename Result>
Napi::Promise queue(Napi::Env env, Napi::Object owner, typename PromiseWorker<Result>::Work work, typename PromiseWorker<Result>::ToJs to_js,
                    std::function<void()> done = nullptr) {
    auto * w = new PromiseWorker<Result>(env, owner, std::move(work), std::move(to_js), std::move(done));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
}

// ---- the engine object ----

class NativeEngine : public Napi::ObjectWrap<NativeEngine> {
public:
    // The class of this environment: the addon is loaded by the main thread and by the KV codec's
    // worker thread (engine/kvcodec/codec-offload.ts), and a class belongs to the environment that defined it.
    static Napi::FunctionReference & constructor(Napi::Env env) { return *env.GetInstanceData<Napi::FunctionReference>(); }
    static Napi::Function Define(Napi::Env env);
    explicit NativeEngine(const Napi::CallbackInfo & info);

private:
    enum class Use { Read, Context };
    // The engine for a call, or nullptr with a JavaScript error thrown: disposed, or (Use::Context)
    // a worker is using the context right now.
    Engine * engine(Napi::Env env, Use use);
    // Queues work on a worker, counted in flight until its promise is settled.
    template <typename Result>
    Napi::Value run(Napi::Env env, typename PromiseWorker<Result>::Work work, typename PromiseWorker<Result>::ToJs to_js) {
        inflight_++;
        return queue<Result>(env, Value(), std::move(work), std::move(to_js), [this] { finished(); });
    }
    void finished();
    // A copiesDone settled: the engine is freed now if it waited for it.
    void finished_waiting();
    bool check_seq(Napi::Env env, int32_t seq, const char * name);

    Napi::Value Info(const Napi::CallbackInfo & info);
    Napi::Value Step(const Napi::CallbackInfo & info);
    Napi::Value SetSampler(const Napi::CallbackInfo & info);
    Napi::Value Tokenize(const Napi::CallbackInfo & info);
    Napi::Value Detokenize(const Napi::CallbackInfo & info);
    Napi::Value IsEog(const Napi::CallbackInfo & info);
    Napi::Value ApplyChatTemplate(const Napi::CallbackInfo & info);
    Napi::Value SeqRm(const Napi::CallbackInfo & info);
    Napi::Value SeqCp(const Napi::CallbackInfo & info);
    Napi::Value SeqAdd(const Napi::CallbackInfo & info);
    Napi::Value EvalLogits(const Napi::CallbackInfo & info);
    Napi::Value SeqPosMax(const Napi::CallbackInfo & info);
    Napi::Value StateGetFile(const Napi::CallbackInfo & info);
    Napi::Value StateSetFile(const Napi::CallbackInfo & info);
    Napi::Value StateSetFileDetached(const Napi::CallbackInfo & info);
    Napi::Value CopiesDone(const Napi::CallbackInfo & info);
    Napi::Value SetStateFile(const Napi::CallbackInfo & info, bool detach);
    // addon-shared.cpp
    Napi::Value StateSizeOf(const Napi::CallbackInfo & info);
    Napi::Value StateGetShared(const Napi::CallbackInfo & info);
    Napi::Value StateSetShared(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);
    Napi::Value Synchronize(const Napi::CallbackInfo & info);
    Napi::Value ExportStats(const Napi::CallbackInfo & info);
    Napi::Value ImportStats(const Napi::CallbackInfo & info);
    Napi::Value DecodeLoop(const Napi::CallbackInfo & info);
    // addon-sampling.cpp
    Napi::Value SetExtras(const Napi::CallbackInfo & info);
    Napi::Value TakeLogprobs(const Napi::CallbackInfo & info);

    std::unique_ptr<Engine> engine_;
    int32_t inflight_ = 0;
    // copiesDone promises not settled (they wait on the device, not on the context).
    int32_t waiting_ = 0;
    bool disposing_ = false;
    std::vector<Napi::Promise::Deferred> dispose_waiters_;
};

Napi::Value Load(const Napi::CallbackInfo & info);

// kvDecode on `exports` (addon-kvcodec.cpp).
void InitKvCodec(Napi::Env env, Napi::Object exports);
// kvRegionCreate/Open/Close/Cuda on `exports` (addon-shared.cpp).
void InitShared(Napi::Env env, Napi::Object exports);

}  // namespace llmfleet_addon
