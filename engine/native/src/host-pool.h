// Host memory for KV states, reused: a GPU state's export buffer and a received hand-off's staging
// buffer are page-locked (the GPU backend's host buffer type) so that the copy to or from the
// device runs at bus speed, and page-locking is slow: cudaHostAlloc of a 512 MB state took longer
// than moving it. A process-wide pool keeps released blocks (up to a byte cap) and hands the
// smallest one that fits, at most 1.5x the request, to the next caller. Without a GPU the blocks are
// page-aligned heap memory, pooled the same way (fresh pages fault on first touch). Thread-safe.
//
// LLMFLEET_HOST_POOL_BYTES caps the bytes kept free in the pool (default 4 GiB; 0 keeps none).
//
// The pool can also be warmed (warm(bytes), kvPoolWarm): one region of that many bytes page-locked
// (and its pages touched) at once, off the request path, from which blocks are carved when no cached
// block fits and handed back to it on release. Without it a pod's first state of each size paid the
// page-locking on its own request. The region is held until the process exits and counts against
// the cap (blocks kept free besides it: the cap less the region).
#pragma once

#include <cstddef>
#include <cstdint>

#include "ggml-backend.h"

namespace llmfleet_addon::hostpool {

struct Block {
    uint8_t * data = nullptr;
    size_t capacity = 0;
    ggml_backend_buffer_t pinned = nullptr;  // null: heap memory from aligned_alloc
    bool carved = false;                     // from the warmed region (warm): goes back to it
};

// A block of at least n bytes (page-locked when a GPU backend is present), or data == nullptr.
Block acquire(size_t n);
// Gives the block back to the pool (or frees it when the pool is full); b is cleared.
void release(Block & b);

struct Stats {
    uint64_t hits = 0, misses = 0, freed = 0;
    size_t cached_bytes = 0, cached_blocks = 0, outstanding_bytes = 0;
    size_t cap_bytes = 0;
    size_t warm_bytes = 0, warm_used_bytes = 0;  // the warmed region, and of it what blocks hold now
    uint64_t warm_hits = 0;                      // blocks carved from it (counted in hits too)
    bool pinned = false;  // blocks are page-locked (a GPU backend is present)
};
Stats stats();

struct Warmed {
    size_t bytes = 0;  // the region's size (0: none could be had)
    double seconds = 0;
    bool pinned = false;
};
// Allocates (page-locks, on a GPU) and touches the warmed region of `bytes` if the pool has none yet;
// a second call keeps the first region. Slow (page-locking runs at a few GB/s): call off the event loop.
Warmed warm(size_t bytes);

}  // namespace llmfleet_addon::hostpool
