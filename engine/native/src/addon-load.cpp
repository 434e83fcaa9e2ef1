// load() and the sequence-state calls of the N-API bindings (see addon.h): a model load on a worker
// thread, and states moved in llama.cpp's file format through single buffers, page-locked on a GPU.
#include <cstring>

#include "addon.h"
#include "host-pool.h"
#include "pool-buffer.h"

namespace llmfleet_addon {

namespace {

// An option of load(): absent (the default), or a value of the right type and range.
bool opt_int(Napi::Env env, const Napi::Object & o, const char * key, int64_t min, int64_t max, int32_t & out) {
    if (!o.Has(key) || o.Get(key).IsUndefined()) return true;
    Napi::Value v = o.Get(key);
    if (!v.IsNumber()) return throw_type(env, std::string("options.") + key + " must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!is_int_in(d, min, max)) {
        return throw_range(env, std::string("options.") + key + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    out = static_cast<int32_t>(d);
    return true;
}

bool opt_bool(Napi::Env env, const Napi::Object & o, const char * key, bool & out) {
    if (!o.Has(key) || o.Get(key).IsUndefined()) return true;
    if (!o.Get(key).IsBoolean()) return throw_type(env, std::string("options.") + key + " must be a boolean");
    out = o.Get(key).As<Napi::Boolean>().Value();
    return true;
}

// options.splitMode ("layer" | "row" | "none") and options.tensorSplit (GPU shares, each >= 0).
bool split_options(Napi::Env env, const Napi::Object & o, llmfleet::EngineOptions & opts) {
    if (o.Has("splitMode") && !o.Get("splitMode").IsUndefined()) {
        if (!o.Get("splitMode").IsString()) return throw_type(env, "options.splitMode must be a string");
        const std::string m = o.Get("splitMode").As<Napi::String>().Utf8Value();
        if (m == "none") opts.split_mode = LLAMA_SPLIT_MODE_NONE;
        else if (m == "layer") opts.split_mode = LLAMA_SPLIT_MODE_LAYER;
        else if (m == "row") opts.split_mode = LLAMA_SPLIT_MODE_ROW;
        else return throw_range(env, "options.splitMode must be layer, row or none; got " + m);
    }
    if (!o.Has("tensorSplit") || o.Get("tensorSplit").IsUndefined()) return true;
    if (!o.Get("tensorSplit").IsArray()) return throw_type(env, "options.tensorSplit must be an array of numbers");
    Napi::Array a = o.Get("tensorSplit").As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
        Napi::Value v = a.Get(i);
        if (!v.IsNumber() || !(v.As<Napi::Number>().DoubleValue() >= 0)) return throw_range(env, "options.tensorSplit entries must be numbers >= 0");
        opts.tensor_split.push_back(v.As<Napi::Number>().FloatValue());
    }
    return true;
}

bool load_options(Napi::Env env, const Napi::Object & o, llmfleet::EngineOptions & opts) {
    int32_t context = 0, sequences = 1, batch = 512, ubatch = -1;
    bool device_greedy = false, pipeline = false, has_pipeline = o.Has("pipeline") && !o.Get("pipeline").IsUndefined();
    const bool ok = opt_int(env, o, "gpuLayers", -1, kMaxI32, opts.gpu_layers) && opt_int(env, o, "contextSize", 0, kMaxI32, context) &&
                    opt_int(env, o, "sequences", 1, 256, sequences) && opt_int(env, o, "batchSize", 1, kMaxI32, batch) &&
                    opt_int(env, o, "ubatchSize", 1, kMaxI32, ubatch) && opt_int(env, o, "threads", 1, 1024, opts.threads) &&
                    opt_bool(env, o, "flashAttention", opts.flash_attention) && opt_bool(env, o, "kvUnified", opts.kv_unified) &&
                    opt_bool(env, o, "swaFull", opts.swa_full) && opt_bool(env, o, "gpuEmbeddings", opts.gpu_embeddings) &&
                    opt_bool(env, o, "deviceGreedy", device_greedy) && opt_bool(env, o, "pipeline", pipeline);
    if (!ok || !split_options(env, o, opts)) return false;
    opts.context_size = static_cast<uint32_t>(context);
    opts.sequences = static_cast<uint32_t>(sequences);
    opts.batch_size = static_cast<uint32_t>(batch);
    opts.ubatch_size = static_cast<uint32_t>(ubatch > 0 ? ubatch : batch);
    opts.device_greedy = device_greedy ? 1 : 0;
    opts.pipeline = has_pipeline ? (pipeline ? 1 : 0) : -1;
    return true;
}

}  // namespace

// load(modelPath, options) -> Promise<NativeEngine>
Napi::Value Load(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    llmfleet::EngineOptions opts;
    if (!arg_string(info, 0, "modelPath", opts.model_path)) return env.Undefined();
    if (info.Length() < 2 || !info[1].IsObject()) {
        throw_type(env, "options must be an object");
        return env.Undefined();
    }
    if (!load_options(env, info[1].As<Napi::Object>(), opts)) return env.Undefined();
    using Holder = std::unique_ptr<Engine>;
    return queue<std::shared_ptr<Holder>>(
        env, Napi::Object(),
        [opts](std::string & error) { return std::make_shared<Holder>(Engine::load(opts, error)); },
        [](Napi::Env env, std::shared_ptr<Holder> & h) -> Napi::Value {
            auto * heap = new Holder(std::move(*h));
            return NativeEngine::constructor(env).New({Napi::External<Holder>::New(env, heap)});
        });
}

namespace {

// A GPU state goes into page-locked host memory (the GPU backend's host buffer type), from the
// pool (host-pool.h): the copy from the device then runs at bus speed instead of through the
// driver's pageable staging, a later import of the same buffer (a host-memory copy of a context)
// does too, and the next export reuses the block instead of page-locking afresh. The block goes
// back to the pool when JavaScript drops the Buffer or releases it (kvRelease, pool-buffer.h).
// StateGetFile takes the block on its worker.

// The sequence state in llama.cpp's file format (what llama_state_seq_save_file writes: "ggsq",
// version, token count, tokens, state) in ONE allocation with no copy: llama.cpp writes its
// 8-byte io header (magic, seq id) into the last 8 bytes of the token area, which the file
// header and tokens then overwrite.
constexpr uint32_t GGSQ_MAGIC = 0x67677371;
constexpr uint32_t GGSQ_VERSION = 3;
constexpr uint32_t IO_MAGIC = 0xaf143cd8;

// The file header (magic, version, token count, tokens) over the 8 bytes llama.cpp's io header took.
void write_file_head(uint8_t * p, const std::vector<llama_token> & tokens) {
    const uint32_t words[3] = {GGSQ_MAGIC, GGSQ_VERSION, static_cast<uint32_t>(tokens.size())};
    std::memcpy(p, words, sizeof(words));
    std::memcpy(p + 12, tokens.data(), 4 * tokens.size());
}

}  // namespace

// stateGetFile(seq, tokens) -> Promise<Buffer>
Napi::Value NativeEngine::StateGetFile(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t seq = 0;
    Napi::Int32Array tokens_in;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq") || !arg_typed(info, 1, "tokens", napi_int32_array, "Int32Array", tokens_in)) {
        return env.Undefined();
    }
    const std::vector<llama_token> tokens(tokens_in.Data(), tokens_in.Data() + tokens_in.ElementLength());
    const size_t head = 12 + 4 * tokens.size();
    const size_t size = e->state_size(seq);
    if (e->on_gpu()) {
        // The pool block is taken on the worker, not here: a block the pool does not hold yet is
        // page-locked when taken, and page-locking a GB-sized state (a 7B model's 8K context) held
        // the event loop, and with it the response of the request whose KV store write-back the
        // export was, for as long as it took.
        const size_t total = head - 8 + size;
        auto block = std::make_shared<hostpool::Block>();
        return run<size_t>(
            env,
            [e, seq, size, total, head, block](std::string & error) {
                *block = hostpool::acquire(total);
                if (!block->data) {
                    error = "no host memory for a state of " + std::to_string(total) + " bytes";
                    return size_t{0};
                }
                const size_t n = e->state_get_into(seq, block->data + head - 8, size);
                if (n != size) {
                    hostpool::release(*block);
                    error = "llama.cpp wrote " + std::to_string(n) + " state bytes, expected " + std::to_string(size);
                }
                return n;
            },
            [block, tokens, total](Napi::Env env, size_t &) -> Napi::Value {
                Napi::Buffer<uint8_t> b = pool_buffer(env, *block, total);
                *block = hostpool::Block{};  // the Buffer owns it now
                write_file_head(b.Data(), tokens);
                return b;
            });
    }
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(env, head - 8 + size);
    auto ref = std::make_shared<Napi::Reference<Napi::Buffer<uint8_t>>>(Napi::Persistent(buf));
    uint8_t * dst = buf.Data() + head - 8;
    return run<size_t>(
        env,
        [e, seq, dst, size](std::string & error) {
            const size_t n = e->state_get_into(seq, dst, size);
            if (n != size) error = "llama.cpp wrote " + std::to_string(n) + " state bytes, expected " + std::to_string(size);
            return n;
        },
        [ref, tokens](Napi::Env, size_t &) -> Napi::Value {
            Napi::Buffer<uint8_t> b = ref->Value();
            write_file_head(b.Data(), tokens);
            return b;
        });
}

// stateSetFile(seq, state) -> state bytes read. Synchronous (the caller holds the engine
// exclusively): the 8 bytes before the state are swapped for llama.cpp's io header for the call and
// restored, so no copy of a (possibly GB-sized) state is made and no JavaScript can see the swap.
Napi::Value NativeEngine::StateSetFile(const Napi::CallbackInfo & info) { return SetStateFile(info, false); }

// stateSetFileDetached(seq, state) -> ticket: stateSetFile whose copies to the device are left
// running (Engine::state_set_detached); 0 when none are (a CPU engine). Until copiesDone(ticket)
// settles, the state must stay as it is and the sequence must not be evaluated.
Napi::Value NativeEngine::StateSetFileDetached(const Napi::CallbackInfo & info) { return SetStateFile(info, true); }

// copiesDone(ticket) -> Promise<void>: settles once a detached import's copies are in the KV cache.
// Not a call on the context (other sequences' steps run meanwhile); dispose waits for it.
Napi::Value NativeEngine::CopiesDone(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Read);
    int32_t ticket = 0;
    if (!e || !arg_int(info, 0, "ticket", 0, kMaxI32, ticket)) return env.Undefined();
    waiting_++;
    return queue<bool>(
        env, Value(),
        [e, ticket](std::string &) {
            e->wait_copies(static_cast<uint32_t>(ticket));
            return true;
        },
        [](Napi::Env en, bool &) -> Napi::Value { return en.Undefined(); }, [this] {
            waiting_--;
            finished_waiting();
        });
}

Napi::Value NativeEngine::SetStateFile(const Napi::CallbackInfo & info, bool detach) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t seq = 0;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq")) return env.Undefined();
    if (info.Length() < 2 || !info[1].IsBuffer()) {
        throw_type(env, "state must be a Buffer");
        return env.Undefined();
    }
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
    if (!check_tokens(env, reinterpret_cast<const int32_t *>(p + 12), words[2], e->n_vocab(), "state tokens")) return env.Undefined();
    uint8_t saved[8];
    std::memcpy(saved, p + head - 8, 8);
    const uint32_t io[2] = {IO_MAGIC, static_cast<uint32_t>(seq)};
    std::memcpy(p + head - 8, io, 8);
    size_t n = 0;
    uint32_t ticket = 0;
    try {
        // The swapped header is read by llama.cpp before state_set returns; detached copies read rows only.
        n = detach ? e->state_set_detached(seq, p + head - 8, len - head + 8, ticket) : e->state_set(seq, p + head - 8, len - head + 8);
    } catch (const std::exception &) {
        n = 0;  // reported below like any refused state
    }
    std::memcpy(p + head - 8, saved, 8);
    if (n == 0) {
        e->wait_copies(ticket);
        Napi::Error::New(env, "llama.cpp rejected the sequence state (wrong model, layout or size)").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    return Napi::Number::New(env, static_cast<double>(detach ? ticket : n));
}

}  // namespace llmfleet_addon
