// Batched tensor copies for sequence state imports and exports.
//
// llama.cpp moves a sequence's state between host memory and the KV cache with one
// ggml_backend_tensor_set (import) or ggml_backend_tensor_get (export) per contiguous run of the
// sequence's cells, per layer, K and V; the CUDA backend synchronizes the device after each. In a
// unified cache that many sequences have come and gone from, a new sequence gets whatever cells are
// free, scattered, so one 4K-token import became thousands of synchronized copies: 305 ms against
// 36 ms for the same bytes into contiguous cells (7B f16 on an H100, bench:http's P/D at 8 streams),
// during which the decode pod served no one.
//
// Inside a CopyBatch on the calling thread, copies to or from device buffers are queued on a device
// stream of the thread's own, without waiting, and the scope waits once when it ends. The linker
// routes llama.cpp's calls here (-Wl,--wrap in CMakeLists.txt, static builds only); elsewhere, or in
// builds with shared llama.cpp libraries, copies behave as before and CopyBatch counts none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

struct ggml_tensor;
struct ggml_backend;
struct ggml_backend_event;

namespace llmfleet {

class CopyBatch {
public:
    CopyBatch();
    ~CopyBatch();  // waits for the queued copies
    CopyBatch(const CopyBatch &) = delete;
    CopyBatch & operator=(const CopyBatch &) = delete;

    // Copies seen inside the scope (every run llama.cpp moved), queued or made as before.
    uint64_t copies() const { return copies_; }
    // Waits for the queued copies (the destructor does it too); idempotent.
    void finish();
    // Instead of waiting: an event recorded on each stream copies were queued on, to wait for
    // later (ggml_backend_event_synchronize, then free it); the scope then waits for none of them.
    // A device whose backend makes no events is waited for here. Copies to a shared region are
    // waited for here as in finish().
    std::vector<::ggml_backend_event *> detach();

    // For the wrapped copy functions: true when the copy was queued (or made) here.
    bool take(::ggml_tensor * tensor, const void * src, void * dst, uint64_t offset, uint64_t size);

    // Copies whose host side lies in [host, host + len) read from or write to alt + the same offset
    // instead (a region of shared-region.h: a state exported into it, or imported from it, while
    // llama.cpp writes or reads only the headers in host memory). Each such copy's offset and size
    // are appended to `rows`. A copy that fails sets error() rather than throw (llama.cpp makes
    // the copies in a destructor).
    struct Redirect {
        const uint8_t * host = nullptr;
        size_t len = 0;
        uint8_t * alt = nullptr;
        bool device = false;  // alt is device memory
        std::vector<uint64_t> * rows = nullptr;
    };
    void redirect(const Redirect & r) { redirect_ = r; }
    const std::string & error() const { return error_; }

private:
    bool redirected(::ggml_tensor * tensor, const uint8_t * host, bool to_tensor, uint64_t offset, uint64_t size);

    Redirect redirect_;
    std::string error_;
    bool shared_copies_ = false;
    CopyBatch * outer_ = nullptr;
    uint64_t copies_ = 0;
    static constexpr int kMaxBackends = 8;
    ::ggml_backend * used_[kMaxBackends] = {};
    int n_used_ = 0;
};

}  // namespace llmfleet
