// Memory two processes on one machine both map, for a KV hand-off that moves no state bytes over
// a socket (issue 18's device path): the prefill pod exports a sequence's rows straight into a
// region it created, the decode pod opens the region by name and imports the rows from it; only
// the state's headers travel over the wire.
//
// Two kinds. `cuda`: device memory (cudaMalloc) shared by a CUDA IPC handle, so the rows go GPU to
// GPU; both processes must see the same GPU. The CUDA runtime is not linked here: its functions are
// looked up in the libcudart ggml-cuda already loaded (dlopen RTLD_NOLOAD), so a CPU build has no
// `cuda` kind. `shm`: POSIX shared memory (shm_open), host memory, for pods without a GPU (and
// CI): both processes must share /dev/shm.
//
// A name says the kind: "cuda:" + the IPC handle in hex, or "shm:" + the shm_open name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace llmfleet_addon::shared {

struct Region {
    uint8_t * base = nullptr;
    size_t bytes = 0;
    bool device = false;  // cuda: base is a device pointer
};

// Whether this process can create and open `cuda` regions (a CUDA runtime is loaded).
bool cuda_available();

// Creates a region of `bytes` owned by this process: `cuda` when `device` and a CUDA runtime is
// loaded, else `shm`. Returns its handle (> 0) and sets `name`; throws std::runtime_error.
int create(size_t bytes, bool device, std::string & name);
// Opens another process's region by its name; `bytes` is its size as the creator said. Throws.
int open(const std::string & name, size_t bytes);
// The region of a handle; false when the handle is not open.
bool get(int handle, Region & out);
// Unmaps (closes the IPC mapping, or frees and unlinks what this process created). Idempotent.
void close(int handle);

// Copies `size` bytes between two pointers of which either may be a region's device memory (a
// thread-local CUDA stream, not waited for: sync() does), else memcpy. Throws when a device
// pointer is involved and no CUDA runtime is loaded.
void copy(void * dst, const void * src, size_t size, bool device);
// Waits for this thread's queued device copies; a no-op without any.
void sync();

}  // namespace llmfleet_addon::shared
