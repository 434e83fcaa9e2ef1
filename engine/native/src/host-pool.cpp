// The host memory pool: see host-pool.h.
#include "host-pool.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace llmfleet_addon::hostpool {

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kMiB = 1 << 20;

// The warmed region: free ranges by offset (adjacent ones merged), blocks carved best-fit.
constexpr size_t kCarveGranule = 64 * 1024;

size_t round_up(size_t n, size_t granule) {
    return (n + granule - 1) / granule * granule;
}

struct Region {
    uint8_t * base = nullptr;
    size_t size = 0, used = 0;
    ggml_backend_buffer_t pinned = nullptr;
    std::map<size_t, size_t> free;  // offset -> bytes

    // A range of n bytes (rounded to kCarveGranule), the smallest free one that fits; null if none.
    uint8_t * carve(size_t & n) {
        n = round_up(n, kCarveGranule);
        auto best = free.end();
        for (auto it = free.begin(); it != free.end(); ++it) {
            if (it->second >= n && (best == free.end() || it->second < best->second)) best = it;
        }
        if (best == free.end()) return nullptr;
        const size_t off = best->first, len = best->second;
        free.erase(best);
        if (len > n) free[off + n] = len - n;
        used += n;
        return base + off;
    }
    void give_back(const uint8_t * p, size_t n) {
        size_t off = static_cast<size_t>(p - base), len = n;
        used -= n;
        auto next = free.lower_bound(off);
        if (next != free.end() && off + len == next->first) {
            len += next->second;
            next = free.erase(next);
        }
        if (next != free.begin()) {
            auto prev = std::prev(next);
            if (prev->first + prev->second == off) {
                prev->second += len;
                return;
            }
        }
        free[off] = len;
    }
};

struct Pool {
    std::mutex mu;
    Region region;
    uint64_t warm_hits = 0;
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
    return round_up(n, p2 / 8 > kMiB ? p2 / 8 : kMiB);
}

// A new block of `cap` bytes: page-locked where a GPU backend is present, else (or if that fails)
// page-aligned heap memory; data == nullptr when neither can be had. Slow on a GPU: call unlocked.
Block new_block(size_t cap) {
    Block b;
    b.capacity = cap;
    if (pool().buft) {
        b.pinned = ggml_backend_buft_alloc_buffer(pool().buft, cap);
        if (b.pinned) b.data = static_cast<uint8_t *>(ggml_backend_buffer_get_base(b.pinned));
    }
    if (!b.data) {
        b.pinned = nullptr;
        b.data = static_cast<uint8_t *>(std::aligned_alloc(kPage, round_up(cap, kPage)));
    }
    return b.data ? b : Block{};
}

// A block from the warmed region, counted as a hit; data == nullptr when it has no room.
Block carve_locked(Pool & p, size_t n) {
    size_t len = n ? n : 1;
    uint8_t * data = p.region.base ? p.region.carve(len) : nullptr;
    if (!data) return Block{};
    Block b;
    b.data = data;
    b.capacity = len;
    b.pinned = p.region.pinned;
    b.carved = true;
    p.outstanding += len;
    p.hits++;
    p.warm_hits++;
    return b;
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
        if (Block b = carve_locked(p, n); b.data) return b;
        p.misses++;
    }
    // Allocated outside the lock: page-locking a large block takes a while.
    Block b = new_block(rounded(n ? n : 1));
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
        if (b.carved) {
            p.region.give_back(b.data, b.capacity);
            b = Block{};
            return;
        }
        // The warmed region counts against the cap: what the pool keeps idle stays within it.
        const size_t room = p.cap > p.region.size ? p.cap - p.region.size : 0;
        if (b.capacity <= room) {
            // Room for it: the oldest cached blocks go first.
            while (p.cached + b.capacity > room && !p.free.empty()) {
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
    s.warm_bytes = p.region.size;
    s.warm_used_bytes = p.region.used;
    s.warm_hits = p.warm_hits;
    s.pinned = p.buft != nullptr;
    return s;
}

Warmed warm(size_t bytes) {
    Pool & p = pool();
    const auto t0 = std::chrono::steady_clock::now();
    {
        std::lock_guard<std::mutex> lock(p.mu);
        p.configure();
        if (p.region.base || bytes == 0) return Warmed{p.region.size, 0, p.region.pinned != nullptr};
    }
    // Outside the lock (page-locking takes a while); a second warm() meanwhile allocates its own
    // and frees it below.
    const size_t n = round_up(bytes, kCarveGranule);
    Block whole = new_block(n);
    if (!whole.data) return Warmed{};
    Region r;
    r.base = whole.data;
    r.size = n;
    r.pinned = whole.pinned;
    std::memset(r.base, 0, n);  // every page faulted in now, not on a request's first write
    r.free[0] = n;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::lock_guard<std::mutex> lock(p.mu);
    if (p.region.base) {  // another warm() won
        free_block(whole);
        return Warmed{p.region.size, seconds, p.region.pinned != nullptr};
    }
    p.region = std::move(r);
    return Warmed{p.region.size, seconds, p.region.pinned != nullptr};
}

}  // namespace llmfleet_addon::hostpool
