// Buffers over host-pool blocks (host-pool.h) handed to JavaScript: an exported state, a received
// hand-off. The block goes back to the pool when JavaScript drops the Buffer (its finalizer, at
// V8's next collection of it) or at once through kvRelease(buffer), which detaches the Buffer
// (its length becomes 0, so nothing can read the memory after) — the hand-off paths call it as
// soon as a state is sent or imported, so that the next state of that size reuses the block
// instead of page-locking a new one while the old waits for garbage collection. The Buffer's
// backing store is one V8 does not count as external memory (pool-buffer.cpp says why: a 128 MB
// state started a full mark-compact each time); V8 is told a fraction of its bytes instead.
// Never transfer such a Buffer's ArrayBuffer (a postMessage transfer list, structuredClone with
// transfer): the block would go back to the pool when the detached original is collected while the
// receiver still reads it. Copy it instead, as the codec worker's offload does. (A detach key that
// refuses transfers is not an option: Node 20 aborts the process on a refused transfer.)
#pragma once

#include <napi.h>

#include "host-pool.h"

namespace llmfleet_addon {

// A Buffer of the first n bytes of `block` (taken over: released by the Buffer).
Napi::Buffer<uint8_t> pool_buffer(Napi::Env env, hostpool::Block block, size_t n);

// kvAlloc(bytes) -> Buffer: a pool block of that many bytes, uninitialised (page-locked where the
// pool is on a GPU; reused, so its pages are already there): a state assembled in JavaScript (a KV
// store load's blocks joined) that llama.cpp then copies to the device. kvRelease gives it back.
Napi::Value KvAlloc(const Napi::CallbackInfo & info);

// kvAllocAsync(bytes) -> Promise<Buffer>: kvAlloc with the block taken on a worker thread. A block
// the pool does not hold is page-locked as it is taken, which for a GB-sized state (a 7B model's 8K
// context loaded from the KV store) held the event loop for ~0.4 s on an H100 host.
Napi::Value KvAllocAsync(const Napi::CallbackInfo & info);

// kvPoolWarm(bytes) -> Promise<{bytes, seconds, pinned}>: the pool's warmed region (host-pool.h)
// allocated, page-locked on a GPU, and touched on a worker thread; a second call keeps the first
// region (bytes: its size, seconds 0). Rejects when the memory cannot be had.
Napi::Value KvPoolWarm(const Napi::CallbackInfo & info);

// kvRelease(buffer) -> boolean: the pool block under a Buffer from pool_buffer back to the pool now
// (the Buffer detached); false for any other buffer or one already released.
Napi::Value KvRelease(const Napi::CallbackInfo & info);

}  // namespace llmfleet_addon
