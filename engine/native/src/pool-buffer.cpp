// Buffers over host-pool blocks, released early or at collection: see pool-buffer.h.
#include "pool-buffer.h"

#include <mutex>
#include <unordered_map>

namespace llmfleet_addon {

namespace {

struct Held {
    hostpool::Block block;
    size_t bytes = 0;  // what V8 was told of (AdjustExternalMemory)
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

Napi::Buffer<uint8_t> pool_buffer(Napi::Env env, hostpool::Block block, size_t n) {
    auto * h = new Held{block, n};
    {
        std::lock_guard<std::mutex> lock(g_mu);
        g_live[block.data] = h;
    }
    Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(n));
    return Napi::Buffer<uint8_t>::New(
        env, block.data, n,
        [](Napi::Env e, uint8_t *, Held * held) {
            give_back(e, held);
            delete held;
        },
        h);
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
