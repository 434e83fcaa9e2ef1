// Memory two processes on one machine both map: see shared-region.h.
#include "shared-region.h"

#include <dirent.h>
#include <dlfcn.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

namespace llmfleet_addon::shared {

namespace {

// The CUDA runtime's functions this file uses, by their C signatures (cudaError_t is an int; a
// cudaIpcMemHandle_t is 64 opaque bytes passed by value).
struct IpcHandle {
    char reserved[64];
};
constexpr int kMemcpyDefault = 4;        // cudaMemcpyDefault: the pointers say the direction
constexpr unsigned kLazyPeerAccess = 1;  // cudaIpcMemLazyEnablePeerAccess
constexpr unsigned kNonBlocking = 1;     // cudaStreamNonBlocking

struct Cuda {
    bool ok = false;
    int (*malloc)(void **, size_t) = nullptr;
    int (*free)(void *) = nullptr;
    int (*ipc_get)(IpcHandle *, void *) = nullptr;
    int (*ipc_open)(void **, IpcHandle, unsigned) = nullptr;
    int (*ipc_close)(void *) = nullptr;
    int (*memcpy_async)(void *, const void *, size_t, int, void *) = nullptr;
    int (*stream_create)(void **, unsigned) = nullptr;
    int (*stream_sync)(void *) = nullptr;
    const char * (*error_string)(int) = nullptr;

    void check(int err, const char * what) const {
        if (err != 0) throw std::runtime_error(std::string(what) + ": " + (error_string ? error_string(err) : std::to_string(err)));
    }
};

template <typename F>
bool sym(void * lib, const char * name, F & out) {
    out = reinterpret_cast<F>(dlsym(lib, name));
    return out != nullptr;
}

// The runtime ggml-cuda loaded, never a second copy: RTLD_NOLOAD finds it only if already there.
const Cuda & cuda() {
    static const Cuda c = [] {
        Cuda r;
        void * lib = nullptr;
        for (const char * n : {"libcudart.so.13", "libcudart.so.12", "libcudart.so"}) {
            if ((lib = dlopen(n, RTLD_NOW | RTLD_NOLOAD)) != nullptr) break;
        }
        if (!lib) return r;
        r.ok = sym(lib, "cudaMalloc", r.malloc) && sym(lib, "cudaFree", r.free) && sym(lib, "cudaIpcGetMemHandle", r.ipc_get) &&
               sym(lib, "cudaIpcOpenMemHandle", r.ipc_open) && sym(lib, "cudaIpcCloseMemHandle", r.ipc_close) &&
               sym(lib, "cudaMemcpyAsync", r.memcpy_async) && sym(lib, "cudaStreamCreateWithFlags", r.stream_create) &&
               sym(lib, "cudaStreamSynchronize", r.stream_sync) && sym(lib, "cudaGetErrorString", r.error_string);
        return r;
    }();
    return c;
}

struct Entry {
    Region region;
    bool owner = false;
    std::string shm_name;  // shm: to unlink (owner)
};

std::mutex g_mu;
std::map<int, Entry> g_regions;
int g_next = 1;
std::atomic<uint64_t> g_serial{0};

int add(Entry e) {
    std::lock_guard<std::mutex> lock(g_mu);
    const int h = g_next++;
    g_regions[h] = std::move(e);
    return h;
}

std::string hex(const void * p, size_t n) {
    static const char * digits = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; i++) {
        const uint8_t b = static_cast<const uint8_t *>(p)[i];
        s += digits[b >> 4];
        s += digits[b & 15];
    }
    return s;
}

bool unhex(const std::string & s, void * out, size_t n) {
    if (s.size() != 2 * n) return false;
    auto v = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
    for (size_t i = 0; i < n; i++) {
        const int hi = v(s[2 * i]), lo = v(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        static_cast<uint8_t *>(out)[i] = static_cast<uint8_t>(hi * 16 + lo);
    }
    return true;
}

uint8_t * map_shm(int fd, size_t bytes) {
    void * p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? nullptr : static_cast<uint8_t *>(p);
}

// At exit (a pod's normal end, SIGTERM included): the shared memory this process made is unlinked,
// so its names and pages do not outlive it. A process killed outright leaves them in /dev/shm.
void unlink_all() {
    std::lock_guard<std::mutex> lock(g_mu);
    for (auto & [h, e] : g_regions) {
        if (e.owner && !e.region.device) shm_unlink(e.shm_name.c_str());
    }
}

// The inode of this process's pid namespace (0 when it cannot be read).
unsigned long long pid_namespace() {
    struct stat st {};
    return stat("/proc/self/ns/pid", &st) == 0 ? static_cast<unsigned long long>(st.st_ino) : 0;
}

// Regions of processes of this pid namespace that no longer run (killed before their exit could
// unlink them): their names and pages in /dev/shm go now. Names of another namespace are left
// alone (a pid there means nothing here).
void unlink_orphans() {
    const unsigned long long ns = pid_namespace();
    DIR * d = opendir("/dev/shm");
    if (!d || ns == 0) {
        if (d) closedir(d);
        return;
    }
    while (dirent * e = readdir(d)) {
        unsigned long long their_ns = 0;
        int pid = 0;
        if (std::sscanf(e->d_name, "llmfleet-kv-%llu-%d-", &their_ns, &pid) != 2 || their_ns != ns || pid <= 0) continue;
        if (kill(pid, 0) != 0 && errno == ESRCH) shm_unlink((std::string("/") + e->d_name).c_str());
    }
    closedir(d);
}

thread_local void * t_stream = nullptr;
thread_local bool t_pending = false;

}  // namespace

bool cuda_available() { return cuda().ok; }

int create(size_t bytes, bool device, std::string & name) {
    const size_t n = bytes ? bytes : 1;
    const Cuda & c = cuda();
    if (device && c.ok) {
        void * p = nullptr;
        c.check(c.malloc(&p, n), "cudaMalloc");
        IpcHandle h{};
        const int err = c.ipc_get(&h, p);
        if (err != 0) {
            c.free(p);
            c.check(err, "cudaIpcGetMemHandle");
        }
        name = "cuda:" + hex(&h, sizeof(h));
        return add({Region{static_cast<uint8_t *>(p), n, true}, true, ""});
    }
    // A name no other process has: its pid namespace and pid (so that a later process of the same
    // namespace can tell whether the maker still lives), a random tag (a pid is reused), a serial.
    static const unsigned long long tag = [] {
        unsigned long long t = 0;
        const int r = ::open("/dev/urandom", O_RDONLY);
        if (r < 0 || read(r, &t, sizeof(t)) != static_cast<ssize_t>(sizeof(t))) t = static_cast<unsigned long long>(time(nullptr)) ^ (static_cast<unsigned long long>(getpid()) << 32);
        if (r >= 0) ::close(r);
        std::atexit(unlink_all);
        unlink_orphans();
        return t & 0xffffffffffffull;
    }();
    char shm[128];
    std::snprintf(shm, sizeof(shm), "/llmfleet-kv-%llu-%d-%llx-%llu", pid_namespace(), static_cast<int>(getpid()), tag, static_cast<unsigned long long>(g_serial++));
    const int fd = shm_open(shm, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) throw std::runtime_error(std::string("shm_open ") + shm + ": " + std::strerror(errno));
    // The pages reserved now (tmpfs takes fallocate): a /dev/shm smaller than the region (a
    // container's default is 64 MiB) fails here, not with a SIGBUS when a state is written into it.
    const int err = ftruncate(fd, static_cast<off_t>(n)) == 0 ? posix_fallocate(fd, 0, static_cast<off_t>(n)) : errno;
    uint8_t * p = err == 0 ? map_shm(fd, n) : nullptr;
    const int saved = err != 0 ? err : errno;
    ::close(fd);
    if (!p) {
        shm_unlink(shm);
        throw std::runtime_error(std::string("shared memory of ") + std::to_string(n) + " bytes: " + std::strerror(saved));
    }
    name = std::string("shm:") + shm;
    return add({Region{p, n, false}, true, shm});
}

int open(const std::string & name, size_t bytes) {
    const size_t n = bytes ? bytes : 1;
    if (name.rfind("cuda:", 0) == 0) {
        const Cuda & c = cuda();
        if (!c.ok) throw std::runtime_error("a cuda region needs the CUDA runtime, and this process has none loaded");
        IpcHandle h{};
        if (!unhex(name.substr(5), &h, sizeof(h))) throw std::runtime_error("not a CUDA IPC handle: " + name.substr(0, 40));
        void * p = nullptr;
        c.check(c.ipc_open(&p, h, kLazyPeerAccess), "cudaIpcOpenMemHandle");
        return add({Region{static_cast<uint8_t *>(p), n, true}, false, ""});
    }
    if (name.rfind("shm:/", 0) != 0 || name.find('/', 5) != std::string::npos) throw std::runtime_error("not a region name: " + name.substr(0, 40));
    const std::string shm = name.substr(4);
    const int fd = shm_open(shm.c_str(), O_RDWR, 0);
    if (fd < 0) throw std::runtime_error("shm_open " + shm + ": " + std::strerror(errno));
    struct stat st {};
    uint8_t * p = fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) >= n ? map_shm(fd, n) : nullptr;
    ::close(fd);
    if (!p) throw std::runtime_error("shared memory " + shm + " is smaller than " + std::to_string(n) + " bytes, or cannot be mapped");
    return add({Region{p, n, false}, false, ""});
}

bool get(int handle, Region & out) {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_regions.find(handle);
    if (it == g_regions.end()) return false;
    out = it->second.region;
    return true;
}

void close(int handle) {
    Entry e;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        auto it = g_regions.find(handle);
        if (it == g_regions.end()) return;
        e = std::move(it->second);
        g_regions.erase(it);
    }
    if (e.region.device) {
        const Cuda & c = cuda();
        if (e.owner) c.free(e.region.base);
        else c.ipc_close(e.region.base);
        return;
    }
    munmap(e.region.base, e.region.bytes);
    if (e.owner) shm_unlink(e.shm_name.c_str());
}

void copy(void * dst, const void * src, size_t size, bool device) {
    if (!device) {
        std::memcpy(dst, src, size);
        return;
    }
    const Cuda & c = cuda();
    if (!c.ok) throw std::runtime_error("a device copy needs the CUDA runtime, and this process has none loaded");
    if (!t_stream) c.check(c.stream_create(&t_stream, kNonBlocking), "cudaStreamCreateWithFlags");
    c.check(c.memcpy_async(dst, src, size, kMemcpyDefault, t_stream), "cudaMemcpyAsync");
    t_pending = true;
}

void sync() {
    if (!t_pending) return;
    t_pending = false;
    const Cuda & c = cuda();
    c.check(c.stream_sync(t_stream), "cudaStreamSynchronize");
}

}  // namespace llmfleet_addon::shared
