// kvDecode(jobs, threads, gains) and kvEncode(jobs, threads, gains): the native decoder and
// encoder of the qpre-family KV codecs (kvcodec-decode.h, kvcodec-encode.h) as module functions;
// kvDecodeAsync, the decoder on a worker thread (a load's blocks). kvDecode and kvEncode are
// synchronous: the codec calls them where it runs the JavaScript codec (engine/kvcodec/
// codec-offload.ts's worker thread for large states, inline for small ones), and they spread the
// tensors over `threads` threads themselves. Every argument is checked before use: a job's output
// or input must be exactly its tensor, its positions one per token, its RoPE inputs the sizes its
// channels say; a corrupt body throws an Error (kvcodec-decode.cpp checks every read).
#include <napi.h>

#include <cmath>
#include <string>
#include <vector>

#include "addon.h"
#include "kvcodec-decode.h"
#include "kvcodec-encode.h"

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
    if (!field_int(env, o, "kind", 4, kind) || !field_int(env, o, "rows", kMaxI32, j.rows) || !field_int(env, o, "cols", kMaxI32, j.cols) ||
        !field_int(env, o, "tokenAxis", 1, axis)) {
        return false;
    }
    if (kind != 1 && kind != 3 && kind != 4) return throw_range(env, "job.kind must be 1, 3 or 4");
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
    uint32_t stride = 0;
    if (o.Has("outStride") && !field_int(env, o, "outStride", kMaxI32, stride)) return false;
    if (stride != 0 && (axis != 1 || stride < j.cols)) return throw_range(env, "job.outStride needs token axis 1 and at least cols");
    j.out_stride = stride;
    const size_t need = j.rows == 0 ? 0 : (static_cast<size_t>(j.rows) - 1) * j.stride() + j.cols;
    if (stride == 0 ? out_n != static_cast<size_t>(j.rows) * j.cols : out_n < need) return throw_range(env, "job.out must hold rows * cols F16 values (with outStride: (rows - 1) * outStride + cols)");
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

// The arguments kvDecode and kvEncode share: jobs (an array of objects, each read by `parse`),
// threads (1..256) and the optional gain table (256 values; nullptr when absent). false after a
// TypeError or RangeError was thrown.
template <typename Job>
bool parse_call(const Napi::CallbackInfo & info, bool (*parse)(Napi::Env, Napi::Object, Job &), std::vector<Job> & jobs, int32_t & threads,
                const float *& gains) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsArray()) return throw_type(env, "jobs must be an array");
    if (!arg_int(info, 1, "threads", 1, 256, threads)) return false;
    if (info.Length() > 2 && !info[2].IsNull() && !info[2].IsUndefined()) {
        Napi::Float32Array g;
        if (!arg_typed(info, 2, "gains", napi_float32_array, "Float32Array", g)) return false;
        if (g.ElementLength() != 256) return throw_range(env, "gains must hold 256 values (one per gain code)");
        gains = g.Data();
    }
    Napi::Array a = info[0].As<Napi::Array>();
    jobs.resize(a.Length());
    for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value v = a.Get(i);
        if (!v.IsObject()) return throw_type(env, "jobs[" + std::to_string(i) + "] must be an object");
        if (!parse(env, v.As<Napi::Object>(), jobs[i])) return false;
    }
    return true;
}

// kvDecode(jobs: object[], threads: number, gains: Float32Array(256) | null): void
Napi::Value KvDecode(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::vector<llmfleet::KvDecodeJob> jobs;
    int32_t threads = 1;
    const float * gains = nullptr;
    if (!parse_call(info, parse_job, jobs, threads, gains)) return env.Undefined();
    try {
        llmfleet::kv_decode_all(jobs.data(), jobs.size(), gains, threads);
    } catch (const std::exception & e) {
        Napi::Error::New(env, e.what()).ThrowAsJavaScriptException();
    }
    return env.Undefined();
}

// kvDecodeAsync(jobs, threads, gains) -> Promise<void>: kvDecode on a worker thread. A load decodes
// its blocks while later ones still arrive, and the synchronous call held the pod's event loop for
// each pass (5-15 ms per 8 blocks of a 270M model's 8K state on 2 cores; a 7B model's 1 GB state
// would be ~0.8 s): no other request moved meanwhile, nor the load's own stream. The jobs array and
// the gain table are held until the promise settles (the jobs' bodies and outputs are read and
// written by the worker); a corrupt body rejects with the decoder's reason.
Napi::Value KvDecodeAsync(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::vector<llmfleet::KvDecodeJob> jobs;
    int32_t threads = 1;
    const float * gains = nullptr;
    if (!parse_call(info, parse_job, jobs, threads, gains)) return env.Undefined();
    Napi::Array owner = Napi::Array::New(env, 2);
    owner.Set(0u, info[0]);
    if (gains) owner.Set(1u, info[2]);
    return queue<bool>(
        env, owner,
        [jobs = std::move(jobs), gains, threads](std::string &) {
            llmfleet::kv_decode_all(jobs.data(), jobs.size(), gains, threads);
            return true;
        },
        [](Napi::Env e, bool &) -> Napi::Value { return e.Undefined(); });
}

bool field_number(Napi::Env env, Napi::Object o, const char * name, double & out) {
    Napi::Value v = o.Get(name);
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) return throw_type(env, std::string(name) + " must be a finite number");
    out = v.As<Napi::Number>().DoubleValue();
    return true;
}

bool parse_rope(Napi::Env env, Napi::Value v, size_t pairs, llmfleet::KvRopeCandidate & r) {
    if (!v.IsObject()) return throw_type(env, "job.ropes[] must be objects");
    Napi::Object o = v.As<Napi::Object>();
    uint32_t style = 0;
    size_t cos_n = 0, sin_n = 0, seeds_n = 0;
    if (!field_int(env, o, "style", 2, style) || !field_number(env, o, "base", r.base)) return false;
    if (!field_typed(env, o, "stepCos", napi_float64_array, "Float64Array", false, r.step_cos, cos_n) ||
        !field_typed(env, o, "stepSin", napi_float64_array, "Float64Array", false, r.step_sin, sin_n) ||
        !field_typed(env, o, "seeds", napi_float64_array, "Float64Array", false, r.seeds, seeds_n)) {
        return false;
    }
    if (style == 0 || cos_n != pairs || sin_n != pairs || pairs == 0 || seeds_n % (2 * pairs) != 0) {
        return throw_range(env, "a RoPE candidate needs a style, and stepCos, stepSin of channels / 2 and seeds of a multiple of channels");
    }
    r.style = static_cast<int>(style);
    r.seed_count = seeds_n / (2 * pairs);
    return true;
}

bool parse_encode_job(Napi::Env env, Napi::Object o, llmfleet::KvEncodeJob & j) {
    uint32_t kind = 0, axis = 0;
    if (!field_int(env, o, "kind", 4, kind) || !field_int(env, o, "rows", kMaxI32, j.rows) || !field_int(env, o, "cols", kMaxI32, j.cols) ||
        !field_int(env, o, "tokenAxis", 1, axis) || !field_number(env, o, "step", j.step)) {
        return false;
    }
    if (kind != 1 && kind != 3 && kind != 4) return throw_range(env, "job.kind must be 1, 3 or 4");
    j.kind = static_cast<int>(kind);
    j.token_axis = static_cast<uint8_t>(axis);
    j.key = o.Get("key").ToBoolean().Value();
    const uint32_t tokens = axis == 0 ? j.rows : j.cols, channels = axis == 0 ? j.cols : j.rows;
    size_t n = 0, pos_n = 0, exact_n = 0, gains_n = 0, seg_n = 0, scale_n = 0;
    const uint32_t * exact = nullptr;
    const uint32_t * seg = nullptr;
    const double * scales = nullptr;
    if (!field_typed(env, o, "data", napi_uint16_array, "Uint16Array", false, j.data, n) ||
        !field_typed(env, o, "positions", napi_int32_array, "Int32Array", false, j.positions, pos_n) ||
        !field_typed(env, o, "exactRows", napi_uint32_array, "Uint32Array", true, exact, exact_n) ||
        !field_typed(env, o, "gains", napi_int8_array, "Int8Array", true, j.gains, gains_n) ||
        !field_typed(env, o, "segmentTokens", napi_uint32_array, "Uint32Array", false, seg, seg_n) ||
        !field_typed(env, o, "segmentScales", napi_float64_array, "Float64Array", false, scales, scale_n)) {
        return false;
    }
    if (n != static_cast<size_t>(j.rows) * j.cols || tokens == 0 || channels == 0) return throw_range(env, "job.data must hold rows * cols F16 values, neither 0");
    if (pos_n != tokens) return throw_range(env, "job.positions must hold one position per token");
    if (gains_n != 0 && gains_n != channels) return throw_range(env, "job.gains must hold one code per channel");
    if (gains_n == 0) j.gains = nullptr;
    if (seg_n != scale_n || seg_n == 0 || seg_n > 255 || (kind == 1 && seg_n != 2)) return throw_range(env, "job.segmentTokens and segmentScales must match (kind 1: bulk, recent)");
    uint64_t covered = 0;
    for (size_t i = 0; i < seg_n; i++) covered += seg[i];
    if (covered > tokens || !(j.step > 0)) return throw_range(env, "job.segmentTokens exceed the tensor's tokens, or job.step is not positive");
    for (size_t i = 0; i < exact_n; i++) {
        if (exact[i] >= tokens) return throw_range(env, "job.exactRows[] must be token indexes of the tensor");
    }
    j.exact_rows.assign(exact, exact + exact_n);
    j.segment_tokens.assign(seg, seg + seg_n);
    j.segment_scales.assign(scales, scales + scale_n);
    Napi::Value ropes = o.Get("ropes");
    if (j.key) {
        if (!ropes.IsArray()) return throw_type(env, "job.ropes must be an array for a key");
        if (channels % 2 != 0) return throw_range(env, "a key needs an even channel count");
        Napi::Array a = ropes.As<Napi::Array>();
        j.ropes.resize(a.Length());
        for (uint32_t i = 0; i < a.Length(); i++) {
            if (!parse_rope(env, a.Get(i), channels / 2, j.ropes[i])) return false;
        }
    }
    return true;
}

// kvEncode(jobs: object[], threads: number, gains: Float32Array(256) | null): Buffer[] (each job's tensor body)
Napi::Value KvEncode(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::vector<llmfleet::KvEncodeJob> jobs;
    int32_t threads = 1;
    const float * gains = nullptr;
    if (!parse_call(info, parse_encode_job, jobs, threads, gains)) return env.Undefined();
    for (const llmfleet::KvEncodeJob & j : jobs) {
        if (j.gains && !gains) {
            throw_type(env, "gains must be given for a job with gain codes");
            return env.Undefined();
        }
    }
    try {
        std::vector<std::vector<uint8_t>> bodies = llmfleet::kv_encode_all(jobs, gains, threads);
        Napi::Array out = Napi::Array::New(env, bodies.size());
        for (size_t i = 0; i < bodies.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::Buffer<uint8_t>::Copy(env, bodies[i].data(), bodies[i].size()));
        return out;
    } catch (const std::exception & e) {
        Napi::Error::New(env, e.what()).ThrowAsJavaScriptException();
        return env.Undefined();
    }
}

}  // namespace

void InitKvCodec(Napi::Env env, Napi::Object exports) {
    exports.Set("kvDecode", Napi::Function::New(env, KvDecode));
    exports.Set("kvDecodeAsync", Napi::Function::New(env, KvDecodeAsync));
    exports.Set("kvEncode", Napi::Function::New(env, KvEncode));
}

}  // namespace llmfleet_addon
