// Buffers over host-pool blocks, released early or at collection: see pool-buffer.h.
#include "pool-buffer.h"

#include "addon.h"

#include <mutex>

// node.h (under node_buffer.h) defines NAPI_VERSION its own way; this file's N-API is already set.
#pragma push_macro("NAPI_VERSION")
#undef NAPI_VERSION
#include <node_buffer.h>
#pragma pop_macro("NAPI_VERSION")
#include <v8.h>
#include <unordered_map>

namespace llmfleet_addon {

namespace {

struct Held {
    hostpool::Block block;
    size_t bytes = 0;  // what V8 was told of (AdjustExternalMemory): kReportedShare of the block's
};

// Blocks under live Buffers, by their data pointer (the Buffer's ArrayBuffer starts there).
std::mutex g_mu;
std::unordered_map<const uint8_t *, Held *> g_live;

// The block back to the pool and V8 told; h is empty after.
void give_back(Napi::Env env, Held * h) {
    if (!h->block.data) return;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        g_live.erase(h->block.data);
    }
    hostpool::release(h->block);
    Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(h->bytes));
    h->bytes = 0;
}

}  // namespace

// What V8 is told of a block's bytes (AdjustExternalMemory), a fraction of them. V8 counts an
// ordinary ArrayBuffer's whole length as external memory, and one of 128 MB passes its limit at
// once: every hand-off state started a full mark-compact on the pod's JavaScript thread
// (bench/handoff-gc.ts: 8-13 per 12 states of 128 MiB, kvTake 2.4-9 ms). The Buffer's backing
// store is therefore one V8 does not account (BackingStore::EmptyDeleter: we free the block, after
// detaching or collecting its ArrayBuffer), and V8 is told an eighth of the bytes: the hand-off
// paths release at once (kvRelease), so the count stays near zero; Buffers dropped without a
// release still add up and bring a collection after a few.
constexpr size_t kReportedShare = 8;

Napi::Buffer<uint8_t> pool_buffer(Napi::Env env, hostpool::Block block, size_t n) {
    auto * h = new Held{block, n / kReportedShare};
    {
        std::lock_guard<std::mutex> lock(g_mu);
        g_live[block.data] = h;
    }
    v8::Isolate * isolate = v8::Isolate::GetCurrent();
    v8::Local<v8::ArrayBuffer> ab = v8::ArrayBuffer::New(isolate, v8::ArrayBuffer::NewBackingStore(block.data, n, v8::BackingStore::EmptyDeleter, nullptr));
    v8::Local<v8::Object> buf = node::Buffer::New(isolate, ab, 0, n).ToLocalChecked();
    // N-API values are V8 handles (node's v8impl::JsValueFromV8LocalValue): the finalizer goes on
    // the ArrayBuffer, which every view of the state keeps alive.
    napi_value ab_value = reinterpret_cast<napi_value>(*ab);
    napi_add_finalizer(
        env, ab_value, h,
        [](napi_env e, void * data, void *) {
            auto * held = static_cast<Held *>(data);
            give_back(Napi::Env(e), held);
            delete held;
        },
        nullptr, nullptr);
    Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(h->bytes));
    return Napi::Buffer<uint8_t>(env, reinterpret_cast<napi_value>(*buf));
}

namespace {

// The byte count of kvAlloc(bytes) / kvAllocAsync(bytes), or 0 with a JavaScript error thrown.
size_t alloc_bytes(const Napi::CallbackInfo & info, const char * fn) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) {
        Napi::TypeError::New(env, std::string(fn) + "(bytes: number)").ThrowAsJavaScriptException();
        return 0;
    }
    const double n = info[0].As<Napi::Number>().DoubleValue();
    if (!(n >= 1 && n <= 1099511627776.0) || n != static_cast<double>(static_cast<uint64_t>(n))) {
        Napi::RangeError::New(env, std::string(fn) + ": bytes must be an integer from 1 to 2^40").ThrowAsJavaScriptException();
        return 0;
    }
    return static_cast<size_t>(n);
}

}  // namespace

Napi::Value KvAlloc(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const size_t n = alloc_bytes(info, "kvAlloc");
    if (n == 0) return env.Undefined();
    hostpool::Block block = hostpool::acquire(n);
    if (!block.data) {
        Napi::Error::New(env, "kvAlloc: out of host memory").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    return pool_buffer(env, block, n);
}

Napi::Value KvAllocAsync(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const size_t n = alloc_bytes(info, "kvAllocAsync");
    if (n == 0) return env.Undefined();
    return queue<hostpool::Block>(
        env, Napi::Object(),
        [n](std::string & error) {
            hostpool::Block block = hostpool::acquire(n);
            if (!block.data) error = "kvAllocAsync: out of host memory";
            return block;
        },
        [n](Napi::Env e, hostpool::Block & block) -> Napi::Value {
            Napi::Buffer<uint8_t> b = pool_buffer(e, block, n);
            block = hostpool::Block{};  // the Buffer owns it now
            return b;
        });
}

Napi::Value KvPoolWarm(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const size_t n = alloc_bytes(info, "kvPoolWarm");
    if (n == 0) return env.Undefined();
    return queue<hostpool::Warmed>(
        env, Napi::Object(),
        [n](std::string & error) {
            const hostpool::Warmed w = hostpool::warm(n);
            if (w.bytes == 0) error = "kvPoolWarm: out of host memory for " + std::to_string(n) + " bytes";
            return w;
        },
        [](Napi::Env e, hostpool::Warmed & w) -> Napi::Value {
            Napi::Object o = Napi::Object::New(e);
            o.Set("bytes", static_cast<double>(w.bytes));
            o.Set("seconds", w.seconds);
            o.Set("pinned", w.pinned);
            return o;
        });
}

Napi::Value KvRelease(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsTypedArray()) {
        Napi::TypeError::New(env, "kvRelease(buffer: Buffer)").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    Napi::ArrayBuffer ab = ta.ArrayBuffer();
    Held * h = nullptr;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        auto it = g_live.find(static_cast<const uint8_t *>(ab.Data()));
        if (it != g_live.end()) h = it->second;
    }
    if (!h || ab.IsDetached()) return Napi::Boolean::New(env, false);
    ab.Detach();
    if (env.IsExceptionPending()) return env.Undefined();
    give_back(env, h);  // the finalizer, later, finds the block gone
    return Napi::Boolean::New(env, true);
}

}  // namespace llmfleet_addon
