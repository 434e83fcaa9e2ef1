// Sequence states whose rows are in a shared region (shared-region.h), for the N-API bindings: the
// region calls (kvRegionCreate/Open/Close/Cuda) and the engine's stateGetShared / stateSetShared.
// Only the state's headers (the `meta` bytes: everything llama.cpp writes that is not a row, a few
// bytes a token) cross into JavaScript; the rows go between the KV cache and the region, device to
// device for a `cuda` region.
#include <sys/mman.h>

#include <cstring>

#include "addon.h"
#include "shared-region.h"

namespace llmfleet_addon {

namespace {

constexpr uint32_t IO_MAGIC = 0xaf143cd8;  // llama.cpp's sequence-state io header (magic, seq id)
constexpr double kMaxBytes = 1ull << 40;

// Host memory of `size` bytes for the headers, mapped but untouched where rows go (no pages there).
struct Scratch {
    uint8_t * p = nullptr;
    size_t size = 0;
    explicit Scratch(size_t n) : size(n ? n : 1) {
        void * m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        p = m == MAP_FAILED ? nullptr : static_cast<uint8_t *>(m);
    }
    ~Scratch() {
        if (p) munmap(p, size);
    }
    Scratch(const Scratch &) = delete;
    Scratch & operator=(const Scratch &) = delete;
};

// The bytes of [0, size) outside the rows (offset, size pairs in increasing offset), in order:
// with copy_out they are gathered from `p` into meta, else scattered from meta into `p`. False when
// the rows are out of order or out of bounds, or meta's length is not theirs.
bool headers(uint8_t * p, size_t size, const std::vector<uint64_t> & rows, std::vector<uint8_t> & meta, bool copy_out) {
    size_t at = 0, m = 0, total = 0;
    for (size_t i = 0; i + 1 < rows.size(); i += 2) {
        if (rows[i] < at || rows[i] + rows[i + 1] > size) return false;
        total += rows[i] - at;
        at = rows[i] + rows[i + 1];
    }
    total += size - at;
    if (copy_out) meta.resize(total);
    else if (meta.size() != total) return false;
    at = 0;
    auto move = [&](size_t from, size_t to) {
        if (copy_out) std::memcpy(meta.data() + m, p + from, to - from);
        else std::memcpy(p + from, meta.data() + m, to - from);
        m += to - from;
    };
    for (size_t i = 0; i + 1 < rows.size(); i += 2) {
        move(at, rows[i]);
        at = rows[i] + rows[i + 1];
    }
    move(at, size);
    return true;
}

bool region_arg(const Napi::CallbackInfo & info, size_t i, shared::Region & out) {
    int32_t handle = 0;
    if (!arg_int(info, i, "region", 1, kMaxI32, handle)) return false;
    if (!shared::get(handle, out)) return throw_range(info.Env(), "region " + std::to_string(handle) + " is not open");
    return true;
}

// kvRegionCreate(bytes, device) -> { name, handle, device }
Napi::Value KvRegionCreate(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    double bytes = 0;
    bool device = false;
    if (!arg_number(info, 0, "bytes", 1, kMaxBytes, bytes) || !arg_bool(info, 1, "device", device)) return env.Undefined();
    std::string name;
    int handle = 0;
    try {
        handle = shared::create(static_cast<size_t>(bytes), device, name);
    } catch (const std::exception & e) {
        Napi::Error::New(env, std::string("kvRegionCreate: ") + e.what()).ThrowAsJavaScriptException();
        return env.Undefined();
    }
    shared::Region r;
    shared::get(handle, r);
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", name);
    o.Set("handle", handle);
    o.Set("device", r.device);
    return o;
}

// kvRegionOpen(name, bytes) -> handle
Napi::Value KvRegionOpen(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::string name;
    double bytes = 0;
    if (!arg_string(info, 0, "name", name) || !arg_number(info, 1, "bytes", 1, kMaxBytes, bytes)) return env.Undefined();
    try {
        return Napi::Number::New(env, shared::open(name, static_cast<size_t>(bytes)));
    } catch (const std::exception & e) {
        Napi::Error::New(env, std::string("kvRegionOpen: ") + e.what()).ThrowAsJavaScriptException();
        return env.Undefined();
    }
}

Napi::Value KvRegionClose(const Napi::CallbackInfo & info) {
    int32_t handle = 0;
    if (!arg_int(info, 0, "region", 1, kMaxI32, handle)) return info.Env().Undefined();
    shared::close(handle);
    return info.Env().Undefined();
}

Napi::Value KvRegionCuda(const Napi::CallbackInfo & info) { return Napi::Boolean::New(info.Env(), shared::cuda_available()); }

struct SharedState {
    size_t size = 0;
    std::vector<uint8_t> meta;
    std::vector<uint64_t> rows;
};

}  // namespace

// stateSizeOf(seq) -> bytes of llama.cpp's state of the sequence (what stateGetShared needs room for).
Napi::Value NativeEngine::StateSizeOf(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t seq = 0;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq")) return env.Undefined();
    return Napi::Number::New(env, static_cast<double>(e->state_size(seq)));
}

// stateGetShared(seq, region) -> Promise<{ size, meta: Buffer, rows: Float64Array }>: the rows
// written into the region at their offsets in the state, the headers returned.
Napi::Value NativeEngine::StateGetShared(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t seq = 0;
    shared::Region region;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq") || !region_arg(info, 1, region)) return env.Undefined();
    return run<SharedState>(
        env,
        [e, seq, region](std::string & error) {
            SharedState s;
            s.size = e->state_size(seq);
            if (s.size > region.bytes) {
                error = "the state is " + std::to_string(s.size) + " bytes and the region " + std::to_string(region.bytes);
                return s;
            }
            Scratch host(s.size);
            if (!host.p) {
                error = "no address space for a state of " + std::to_string(s.size) + " bytes";
                return s;
            }
            if (e->state_get_shared(seq, host.p, s.size, region.base, region.device, s.rows, error) == 0) return s;
            if (!headers(host.p, s.size, s.rows, s.meta, true)) error = "llama.cpp's rows were not in order";
            return s;
        },
        [](Napi::Env env, SharedState & s) -> Napi::Value {
            Napi::Object o = Napi::Object::New(env);
            o.Set("size", static_cast<double>(s.size));
            o.Set("meta", Napi::Buffer<uint8_t>::Copy(env, s.meta.data(), s.meta.size()));
            Napi::Float64Array rows = Napi::Float64Array::New(env, s.rows.size());
            for (size_t i = 0; i < s.rows.size(); i++) rows[i] = static_cast<double>(s.rows[i]);
            o.Set("rows", rows);
            return o;
        });
}

// stateSetShared(seq, region, size, meta, rows) -> Promise<bytes read>: the state stateGetShared
// described, its rows read from the region (another process's, opened by name).
Napi::Value NativeEngine::StateSetShared(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Engine * e = engine(env, Use::Context);
    int32_t seq = 0;
    shared::Region region;
    double size = 0;
    Napi::Float64Array rows_in;
    if (!e || !arg_int(info, 0, "seq", 0, kMaxI32, seq) || !check_seq(env, seq, "seq") || !region_arg(info, 1, region) ||
        !arg_number(info, 2, "size", 8, kMaxBytes, size)) {
        return env.Undefined();
    }
    if (info.Length() < 4 || !info[3].IsBuffer()) {
        throw_type(env, "meta must be a Buffer");
        return env.Undefined();
    }
    if (!arg_typed(info, 4, "rows", napi_float64_array, "Float64Array", rows_in)) return env.Undefined();
    if (size > static_cast<double>(region.bytes)) {
        throw_range(env, "the state is " + std::to_string(static_cast<size_t>(size)) + " bytes and the region " + std::to_string(region.bytes));
        return env.Undefined();
    }
    Napi::Buffer<uint8_t> meta_in = info[3].As<Napi::Buffer<uint8_t>>();
    auto s = std::make_shared<SharedState>();
    s->size = static_cast<size_t>(size);
    s->meta.assign(meta_in.Data(), meta_in.Data() + meta_in.Length());
    for (size_t i = 0; i < rows_in.ElementLength(); i++) s->rows.push_back(static_cast<uint64_t>(rows_in[i]));
    return run<size_t>(
        env,
        [e, seq, region, s](std::string & error) -> size_t {
            Scratch host(s->size);
            if (!host.p) {
                error = "no address space for a state of " + std::to_string(s->size) + " bytes";
                return 0;
            }
            if (s->rows.size() % 2 != 0 || !headers(host.p, s->size, s->rows, s->meta, false) || (!s->rows.empty() && s->rows[0] < 8)) {
                error = "meta and rows do not describe a state of " + std::to_string(s->size) + " bytes";
                return 0;
            }
            const uint32_t io[2] = {IO_MAGIC, static_cast<uint32_t>(seq)};
            std::memcpy(host.p, io, sizeof(io));
            return e->state_set_shared(seq, host.p, s->size, region.base, region.device, error);
        },
        [](Napi::Env env, size_t & n) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(n)); });
}

void InitShared(Napi::Env env, Napi::Object exports) {
    exports.Set("kvRegionCreate", Napi::Function::New(env, KvRegionCreate));
    exports.Set("kvRegionOpen", Napi::Function::New(env, KvRegionOpen));
    exports.Set("kvRegionClose", Napi::Function::New(env, KvRegionClose));
    exports.Set("kvRegionCuda", Napi::Function::New(env, KvRegionCuda));
}

}  // namespace llmfleet_addon
