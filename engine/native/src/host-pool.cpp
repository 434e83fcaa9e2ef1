// The host memory pool: see host-pool.h.
#include "host-pool.h"

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace llmfleet_addon::hostpool {

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kMiB = 1 << 20;

struct Pool {
    std::mutex mu;
    std::vector<Block> free;  // cached blocks
    size_t cached = 0, outstanding = 0, cap = 0;
    uint64_t hits = 0, misses = 0, freed = 0;
    bool configured = false;
    ggml_backend_buffer_type_t buft = nullptr;

    void configure() {
        if (configured) return;
        configured = true;
        cap = size_t(4) << 30;
        if (const char * v = std::getenv("LLMFLEET_HOST_POOL_BYTES")) {
            char * end = nullptr;
            const unsigned long long n = std::strtoull(v, &end, 10);
            if (end && *end == '\0') cap = static_cast<size_t>(n);
        }
        ggml_backend_dev_t gpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
        buft = gpu ? ggml_backend_dev_host_buffer_type(gpu) : nullptr;
    }
};

Pool & pool() {
    static Pool p;
    return p;
}

// Sizes are rounded up to a granule of 1/8 of their power of two (at least 1 MiB), so that states
// of nearly the same size (one more token) share blocks; at most 12.5 % is wasted.
size_t rounded(size_t n) {
    size_t p2 = kMiB;
    while (p2 < n) p2 <<= 1;
    const size_t granule = p2 / 8 > kMiB ? p2 / 8 : kMiB;
    return (n + granule - 1) / granule * granule;
}

void free_block(Block & b) {
    if (b.pinned) ggml_backend_buffer_free(b.pinned);
    else std::free(b.data);
    b = Block{};
}

}  // namespace

Block acquire(size_t n) {
    Pool & p = pool();
    {
        std::lock_guard<std::mutex> lock(p.mu);
        p.configure();
        size_t best = p.free.size();
        for (size_t i = 0; i < p.free.size(); i++) {
            const size_t c = p.free[i].capacity;
            if (c >= n && c <= n + n / 2 + kMiB && (best == p.free.size() || c < p.free[best].capacity)) best = i;
        }
        if (best < p.free.size()) {
            Block b = p.free[best];
            p.free[best] = p.free.back();
            p.free.pop_back();
            p.cached -= b.capacity;
            p.outstanding += b.capacity;
            p.hits++;
            return b;
        }
        p.misses++;
    }
    // Allocated outside the lock: page-locking a large block takes a while.
    const size_t cap = rounded(n ? n : 1);
    Block b;
    b.capacity = cap;
    if (pool().buft) {
        b.pinned = ggml_backend_buft_alloc_buffer(pool().buft, cap);
        if (b.pinned) b.data = static_cast<uint8_t *>(ggml_backend_buffer_get_base(b.pinned));
    }
    if (!b.data) {
        b.pinned = nullptr;
        b.data = static_cast<uint8_t *>(std::aligned_alloc(kPage, (cap + kPage - 1) / kPage * kPage));
    }
    if (!b.data) return Block{};
    std::lock_guard<std::mutex> lock(p.mu);
    p.outstanding += b.capacity;
    return b;
}

void release(Block & b) {
    if (!b.data) return;
    Pool & p = pool();
    std::vector<Block> evicted;
    {
        std::lock_guard<std::mutex> lock(p.mu);
        p.configure();
        p.outstanding -= b.capacity;
        if (b.capacity <= p.cap) {
            // Room for it: the oldest cached blocks go first.
            while (p.cached + b.capacity > p.cap && !p.free.empty()) {
                evicted.push_back(p.free.front());
                p.cached -= p.free.front().capacity;
                p.free.erase(p.free.begin());
            }
            p.free.push_back(b);
            p.cached += b.capacity;
        } else {
            evicted.push_back(b);
        }
        p.freed += evicted.size();
    }
    for (Block & e : evicted) free_block(e);
    b = Block{};
}

Stats stats() {
    Pool & p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    p.configure();
    Stats s;
    s.hits = p.hits;
    s.misses = p.misses;
    s.freed = p.freed;
    s.cached_bytes = p.cached;
    s.cached_blocks = p.free.size();
    s.outstanding_bytes = p.outstanding;
    s.cap_bytes = p.cap;
    s.pinned = p.buft != nullptr;
    return s;
}

}  // namespace llmfleet_addon::hostpool
