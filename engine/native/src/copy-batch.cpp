// Batched tensor copies for sequence state imports and exports: see copy-batch.h.
#include "copy-batch.h"

#include <utility>
#include <vector>

#include "ggml-backend.h"
#include "shared-region.h"

namespace llmfleet {

namespace {

thread_local CopyBatch * t_batch = nullptr;

// A backend of the thread's own per device (its own stream), made on first use. Never freed: the
// threads that import and export live as long as the process, and freeing a CUDA stream while the
// process exits races the CUDA runtime's own teardown. nullptr: the device copies synchronously.
struct ThreadBackends {
    std::vector<std::pair<ggml_backend_dev_t, ggml_backend_t>> list;

    ggml_backend_t get(ggml_backend_dev_t dev) {
        for (const auto & p : list) {
            if (p.first == dev) return p.second;
        }
        ggml_backend_dev_props props{};
        ggml_backend_dev_get_props(dev, &props);
        ggml_backend_t b = props.caps.async ? ggml_backend_dev_init(dev, nullptr) : nullptr;
        list.emplace_back(dev, b);
        return b;
    }
};

thread_local ThreadBackends t_backends;

}  // namespace

CopyBatch::CopyBatch() : outer_(t_batch) { t_batch = this; }

CopyBatch::~CopyBatch() {
    finish();
    t_batch = outer_;
}

void CopyBatch::finish() {
    for (int i = 0; i < n_used_; i++) ggml_backend_synchronize(used_[i]);
    n_used_ = 0;
    if (shared_copies_) {
        shared_copies_ = false;
        try {
            llmfleet_addon::shared::sync();
        } catch (const std::exception & e) {
            if (error_.empty()) error_ = e.what();
        }
    }
}

std::vector<ggml_backend_event_t> CopyBatch::detach() {
    std::vector<ggml_backend_event_t> events;
    for (int i = 0; i < n_used_; i++) {
        ggml_backend_event_t ev = ggml_backend_event_new(ggml_backend_get_device(used_[i]));
        if (!ev) {
            ggml_backend_synchronize(used_[i]);
            continue;
        }
        ggml_backend_event_record(ev, used_[i]);
        events.push_back(ev);
    }
    n_used_ = 0;
    finish();  // what is left: copies to or from a shared region
    return events;
}

bool CopyBatch::redirected(ggml_tensor * tensor, const uint8_t * host, bool to_tensor, uint64_t offset, uint64_t size) {
    uint8_t * alt = redirect_.alt + (host - redirect_.host);
    if (redirect_.rows) {
        redirect_.rows->push_back(static_cast<uint64_t>(host - redirect_.host));
        redirect_.rows->push_back(size);
    }
    ggml_backend_buffer_t buf = tensor->view_src ? tensor->view_src->buffer : tensor->buffer;
    // A tensor's data pointer is host memory in a host buffer, else the device's (ggml-cuda's own).
    const bool on_device = buf && !ggml_backend_buffer_is_host(buf);
    uint8_t * t = static_cast<uint8_t *>(tensor->data) + offset;
    try {
        if (to_tensor) llmfleet_addon::shared::copy(t, alt, size, on_device || redirect_.device);
        else llmfleet_addon::shared::copy(alt, t, size, on_device || redirect_.device);
        shared_copies_ = shared_copies_ || on_device || redirect_.device;
    } catch (const std::exception & e) {
        if (error_.empty()) error_ = e.what();
    }
    return true;
}

bool CopyBatch::take(ggml_tensor * tensor, const void * src, void * dst, uint64_t offset, uint64_t size) {
    copies_++;
    const uint8_t * host = static_cast<const uint8_t *>(src ? src : dst);
    if (redirect_.host && size > 0 && host >= redirect_.host && host + size <= redirect_.host + redirect_.len) {
        return redirected(tensor, host, src != nullptr, offset, size);
    }
    ggml_backend_buffer_t buf = tensor->view_src ? tensor->view_src->buffer : tensor->buffer;
    if (!buf || size == 0 || ggml_backend_buffer_is_host(buf)) return false;
    ggml_backend_buffer_type_t type = ggml_backend_buffer_get_type(buf);
    ggml_backend_dev_t dev = ggml_backend_buft_get_device(type);
    // Only the device's own buffers: its backend's asynchronous copies refuse others (split buffers).
    if (!dev || type != ggml_backend_dev_buffer_type(dev)) return false;
    ggml_backend_t backend = t_backends.get(dev);
    if (!backend) return false;
    int i = 0;
    while (i < n_used_ && used_[i] != backend) i++;
    if (i == n_used_) {
        if (n_used_ == kMaxBackends) return false;
        used_[n_used_++] = backend;
    }
    if (src) ggml_backend_tensor_set_async(backend, tensor, src, offset, size);
    else ggml_backend_tensor_get_async(backend, tensor, dst, offset, size);
    return true;
}

}  // namespace llmfleet

#ifdef LLMFLEET_WRAP_COPIES
// The linker sends every call of these two from other objects (llama.cpp's state io) here
// (-Wl,--wrap=...); __real_* are ggml's own.
extern "C" {
void __real_ggml_backend_tensor_set(ggml_tensor * tensor, const void * data, size_t offset, size_t size);
void __real_ggml_backend_tensor_get(const ggml_tensor * tensor, void * data, size_t offset, size_t size);

void __wrap_ggml_backend_tensor_set(ggml_tensor * tensor, const void * data, size_t offset, size_t size) {
    llmfleet::CopyBatch * b = llmfleet::t_batch;
    if (b && b->take(tensor, data, nullptr, offset, size)) return;
    __real_ggml_backend_tensor_set(tensor, data, offset, size);
}

void __wrap_ggml_backend_tensor_get(const ggml_tensor * tensor, void * data, size_t offset, size_t size) {
    llmfleet::CopyBatch * b = llmfleet::t_batch;
    if (b && b->take(const_cast<ggml_tensor *>(tensor), nullptr, data, offset, size)) return;
    __real_ggml_backend_tensor_get(tensor, data, offset, size);
}
}
#endif
