// kvDecode(jobs, threads, gains): the native decoder of the qpre-family KV codecs
// (kvcodec-decode.h) as a module function. Synchronous: the codec runs it where it runs the
// JavaScript decoder (engine/kvcodec/codec-offload.ts's worker thread for large entries, inline for
// small ones), and it spreads the tensors over `threads` threads itself. Every argument is checked
// before use: a job's output must be exactly its tensor, its positions one per token, its RoPE
// seeds the size its pairs say; a corrupt body throws an Error (kvcodec-decode.cpp checks every read).
#include <napi.h>

#include <string>
#include <vector>

#include "addon.h"
#include "kvcodec-decode.h"

namespace llmfleet_addon {

namespace {

bool field_int(Napi::Env env, Napi::Object o, const char * name, int64_t max, uint32_t & out) {
    Napi::Value v = o.Get(name);
    if (!v.IsNumber() || !is_int_in(v.As<Napi::Number>().DoubleValue(), 0, max)) {
        return throw_range(env, std::string("job.") + name + " must be an integer in [0, " + std::to_string(max) + "]");
    }
    out = static_cast<uint32_t>(v.As<Napi::Number>().DoubleValue());
    return true;
}

template <typename T>
bool field_typed(Napi::Env env, Napi::Object o, const char * name, napi_typedarray_type type, const char * type_name, bool optional, const T *& data, size_t & n) {
    Napi::Value v = o.Get(name);
    if (optional && v.IsUndefined()) {
        data = nullptr;
        n = 0;
        return true;
    }
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) return throw_type(env, std::string("job.") + name + " must be a " + type_name);
    Napi::TypedArray a = v.As<Napi::TypedArray>();
    data = reinterpret_cast<const T *>(static_cast<const uint8_t *>(a.ArrayBuffer().Data()) + a.ByteOffset());
    n = a.ElementLength();
    return true;
}

bool parse_job(Napi::Env env, Napi::Object o, llmfleet::KvDecodeJob & j) {
    uint32_t kind = 0, axis = 0;
    if (!field_int(env, o, "kind", 3, kind) || !field_int(env, o, "rows", kMaxI32, j.rows) || !field_int(env, o, "cols", kMaxI32, j.cols) ||
        !field_int(env, o, "tokenAxis", 1, axis)) {
        return false;
    }
    if (kind != 1 && kind != 3) return throw_range(env, "job.kind must be 1 or 3");
    j.kind = static_cast<int>(kind);
    j.token_axis = static_cast<uint8_t>(axis);
    const uint16_t * out = nullptr;
    const int32_t * positions = nullptr;
    size_t out_n = 0, pos_n = 0, step_n = 0, step_sin_n = 0;
    if (!field_typed(env, o, "body", napi_uint8_array, "Uint8Array", false, j.body, j.body_len)) return false;
    if (!field_typed(env, o, "out", napi_uint16_array, "Uint16Array", false, out, out_n)) return false;
    if (!field_typed(env, o, "positions", napi_int32_array, "Int32Array", false, positions, pos_n)) return false;
    if (!field_typed(env, o, "stepCos", napi_float64_array, "Float64Array", true, j.step_cos, step_n)) return false;
    if (!field_typed(env, o, "stepSin", napi_float64_array, "Float64Array", true, j.step_sin, step_sin_n)) return false;
    size_t seeds_n = 0;
    if (!field_typed(env, o, "seeds", napi_float64_array, "Float64Array", true, j.seeds, seeds_n)) return false;
    if (out_n != static_cast<size_t>(j.rows) * j.cols) return throw_range(env, "job.out must hold rows * cols F16 values");
    if (pos_n != (axis == 0 ? j.rows : j.cols)) return throw_range(env, "job.positions must hold one position per token");
    if (step_n != step_sin_n || (step_n > 0 && (seeds_n % (2 * step_n) != 0 || !j.seeds))) {
        return throw_range(env, "job.stepCos, stepSin and seeds must be pairs, pairs and a multiple of 2 * pairs long");
    }
    j.out = const_cast<uint16_t *>(out);
    j.positions = positions;
    j.pairs = step_n;
    j.seed_count = step_n ? seeds_n / (2 * step_n) : 0;
    return true;
}

// kvDecode(jobs: object[], threads: number, gains: Float32Array(256) | null): void
Napi::Value KvDecode(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsArray()) {
        throw_type(env, "jobs must be an array");
        return env.Undefined();
    }
    int32_t threads = 1;
    if (!arg_int(info, 1, "threads", 1, 256, threads)) return env.Undefined();
    const float * gains = nullptr;
    if (info.Length() > 2 && !info[2].IsNull() && !info[2].IsUndefined()) {
        Napi::Float32Array g;
        if (!arg_typed(info, 2, "gains", napi_float32_array, "Float32Array", g)) return env.Undefined();
        if (g.ElementLength() != 256) {
            throw_range(env, "gains must hold 256 values (one per gain code)");
            return env.Undefined();
        }
        gains = g.Data();
    }
    Napi::Array a = info[0].As<Napi::Array>();
    std::vector<llmfleet::KvDecodeJob> jobs(a.Length());
    for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value v = a.Get(i);
        if (!v.IsObject()) {
            throw_type(env, "jobs[" + std::to_string(i) + "] must be an object");
            return env.Undefined();
        }
        if (!parse_job(env, v.As<Napi::Object>(), jobs[i])) return env.Undefined();
    }
    try {
        llmfleet::kv_decode_all(jobs.data(), jobs.size(), gains, threads);
    } catch (const std::exception & e) {
        Napi::Error::New(env, e.what()).ThrowAsJavaScriptException();
    }
    return env.Undefined();
}

}  // namespace

void InitKvCodec(Napi::Env env, Napi::Object exports) { exports.Set("kvDecode", Napi::Function::New(env, KvDecode)); }

}  // namespace llmfleet_addon
