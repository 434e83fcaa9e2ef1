// Host memory for KV states, reused: a GPU state's export buffer and a received hand-off's staging
// buffer are page-locked (the GPU backend's host buffer type) so that the copy to or from the
// device runs at bus speed, and page-locking is slow: cudaHostAlloc of a 512 MB state took longer
// than moving it. A process-wide pool keeps released blocks (up to a byte cap) and hands the
// smallest one that fits, at most 1.5x the request, to the next caller. Without a GPU the blocks are
// page-aligned heap memory, pooled the same way (fresh pages fault on first touch). Thread-safe.
//
// LLMFLEET_HOST_POOL_BYTES caps the bytes kept free in the pool (default 4 GiB; 0 keeps none).
#pragma once

#include <cstddef>
#include <cstdint>

#include "ggml-backend.h"

namespace llmfleet_addon::hostpool {

struct Block {
    uint8_t * data = nullptr;
    size_t capacity = 0;
    ggml_backend_buffer_t pinned = nullptr;  // null: heap memory from aligned_alloc
};

// A block of at least n bytes (page-locked when a GPU backend is present), or data == nullptr.
Block acquire(size_t n);
// Gives the block back to the pool (or frees it when the pool is full); b is cleared.
void release(Block & b);

struct Stats {
    uint64_t hits = 0, misses = 0, freed = 0;
    size_t cached_bytes = 0, cached_blocks = 0, outstanding_bytes = 0;
    size_t cap_bytes = 0;
    bool pinned = false;  // blocks are page-locked (a GPU backend is present)
};
Stats stats();

}  // namespace llmfleet_addon::hostpool
