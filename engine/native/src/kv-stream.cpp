// The network hand-off of KV state: wire format and design in kv-stream.h.
//
// kvSend(state, host, port, id, header, chunkBytes, timeoutMs) -> Promise<{status, message, bytes, seconds}>
//   streams `state` (a Buffer; read in place, never copied) on a thread of its own. Resolves with
//   the receiver's answer (status 0 = staged, message = where); rejects on a transport failure with
//   err.code "connect" (nobody listening: use another path), "timeout", "closed" (the receiver went
//   away mid-stream) or "protocol".
// kvListen(host, port, {maxBytes, maxConnections, ttlMs, idleMs, advertise, httpPort}) -> {port, handle} (port 0 = any free port)
//   the "staged" answer names advertise, else http://<address the connection reached>:<httpPort>,
//   else that address alone
//   receives hand-offs on threads of their own into page-locked (GPU) or page-aligned host memory,
//   bounded by maxBytes staged plus in flight; a state not taken within ttlMs is freed; a sender
//   silent for idleMs is dropped and its partial state freed.
// kvTake(handle, id) -> null | {state, header, seconds, pinned}: the staged state as a Buffer over its native
//   memory (freed when JavaScript drops it), removed from staging.
// kvStats(handle) -> counters; kvClose(handle) stops that listener and frees what it staged.
#include "kv-stream.h"

#include "addon.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "ggml-backend.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace llmfleet_addon {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t KVN_MAGIC = 0x4e4b464c;  // "LFKN"
constexpr uint32_t KVN_VERSION = 1;
constexpr uint32_t MAX_ID = 256;
constexpr uint32_t MAX_HEADER = 1 << 20;
constexpr uint32_t MAX_CHUNK = 64u << 20;
enum Status : uint32_t { ST_OK = 0, ST_FULL = 1, ST_BAD = 2, ST_TOO_LARGE = 3, ST_EXISTS = 4 };

// ---- CRC-32C (Castagnoli): SSE 4.2 where the CPU has it (several GB/s), else slicing-by-8 ----

uint32_t g_crc_table[8][256];
std::once_flag g_crc_once;

void crc_init() {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        g_crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) g_crc_table[t][i] = (g_crc_table[t - 1][i] >> 8) ^ g_crc_table[0][g_crc_table[t - 1][i] & 0xff];
    }
}

uint32_t crc32c_sw(uint32_t crc, const uint8_t * p, size_t n) {
    crc = ~crc;
    while (n >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        w ^= crc;
        crc = g_crc_table[7][w & 0xff] ^ g_crc_table[6][(w >> 8) & 0xff] ^ g_crc_table[5][(w >> 16) & 0xff] ^ g_crc_table[4][(w >> 24) & 0xff] ^
              g_crc_table[3][(w >> 32) & 0xff] ^ g_crc_table[2][(w >> 40) & 0xff] ^ g_crc_table[1][(w >> 48) & 0xff] ^ g_crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ g_crc_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_hw(uint32_t crc, const uint8_t * p, size_t n) {
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = static_cast<uint32_t>(c);
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}
#endif

uint32_t crc32c(const uint8_t * p, size_t n) {
    std::call_once(g_crc_once, crc_init);
#if defined(__x86_64__)
    static const bool hw = __builtin_cpu_supports("sse4.2");
    if (hw) return crc32c_hw(0, p, n);
#endif
    return crc32c_sw(0, p, n);
}

// ---- host memory for a received state: page-locked when a GPU backend is present ----

struct HostMem {
    uint8_t * data = nullptr;
    size_t size = 0;
    ggml_backend_buffer_t pinned = nullptr;

    static bool alloc(size_t n, HostMem & out) {
        ggml_backend_dev_t gpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
        ggml_backend_buffer_type_t buft = gpu ? ggml_backend_dev_host_buffer_type(gpu) : nullptr;
        ggml_backend_buffer_t b = buft ? ggml_backend_buft_alloc_buffer(buft, n ? n : 1) : nullptr;
        if (b) {
            out = {static_cast<uint8_t *>(ggml_backend_buffer_get_base(b)), n, b};
            return true;
        }
        const size_t rounded = ((n ? n : 1) + 4095) / 4096 * 4096;
        void * p = std::aligned_alloc(4096, rounded);
        if (!p) return false;
        out = {static_cast<uint8_t *>(p), n, nullptr};
        return true;
    }
    void release() {
        if (pinned) ggml_backend_buffer_free(pinned);
        else std::free(data);
        data = nullptr;
        pinned = nullptr;
        size = 0;
    }
};

// ---- sockets ----

void set_timeouts(int fd, int64_t ms) {
    timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

void tune(int fd) {
    int one = 1, buf = 8 << 20;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

// A transport failure: code is one of connect, timeout, closed, protocol.
struct NetError {
    std::string code, message;
};

NetError io_error(const char * what) {
    const int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) return {"timeout", std::string(what) + " timed out"};
    if (e == EPIPE || e == ECONNRESET) return {"closed", std::string(what) + ": the peer closed the connection"};
    return {"closed", std::string(what) + ": " + std::strerror(e)};
}

bool send_iov(int fd, iovec * iov, int cnt, NetError & err) {
    while (cnt > 0) {
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = static_cast<size_t>(cnt);
        const ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            err = io_error("send");
            return false;
        }
        size_t left = static_cast<size_t>(n);
        while (cnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = static_cast<uint8_t *>(iov->iov_base) + left;
            iov->iov_len -= left;
        }
    }
    return true;
}

bool send_all(int fd, const void * p, size_t n, NetError & err) {
    iovec v{const_cast<void *>(p), n};
    return send_iov(fd, &v, 1, err);
}

bool recv_all(int fd, void * p, size_t n, NetError & err) {
    auto * b = static_cast<uint8_t *>(p);
    while (n > 0) {
        const ssize_t r = recv(fd, b, n, MSG_WAITALL);
        if (r == 0) {
            err = {"closed", "the peer closed the connection mid-stream"};
            return false;
        }
        if (r < 0) {
            if (errno == EINTR) continue;
            err = io_error("receive");
            return false;
        }
        b += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

bool send_reply(int fd, uint32_t status, const std::string & msg, NetError & err) {
    uint32_t head[2] = {status, static_cast<uint32_t>(msg.size())};
    iovec v[2] = {{head, sizeof(head)}, {const_cast<char *>(msg.data()), msg.size()}};
    return send_iov(fd, v, 2, err);
}

bool recv_reply(int fd, uint32_t & status, std::string & msg, NetError & err) {
    uint32_t head[2];
    if (!recv_all(fd, head, sizeof(head), err)) return false;
    if (head[1] > MAX_HEADER) {
        err = {"protocol", "reply too long"};
        return false;
    }
    status = head[0];
    msg.resize(head[1]);
    return recv_all(fd, msg.data(), msg.size(), err);
}

int connect_to(const std::string & host, int port, int64_t timeout_ms, NetError & err) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (rc != 0) {
        err = {"connect", "resolving " + host + ": " + gai_strerror(rc)};
        return -1;
    }
    int fd = -1;
    for (addrinfo * a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        const int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r < 0 && errno == EINPROGRESS) {
            pollfd p{fd, POLLOUT, 0};
            r = poll(&p, 1, static_cast<int>(timeout_ms));
            int soerr = 0;
            socklen_t len = sizeof(soerr);
            if (r == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
            if (r == 1 && soerr == 0) r = 0;
            else {
                errno = r == 0 ? ETIMEDOUT : soerr;
                r = -1;
            }
        }
        if (r == 0) {
            fcntl(fd, F_SETFL, flags);
            break;
        }
        err = {"connect", "connecting to " + host + ":" + std::to_string(port) + ": " + std::strerror(errno)};
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

// ---- sending ----

struct SendJob {
    // inputs (the state is read in place; `keep` holds its Buffer until the promise settles)
    const uint8_t * data = nullptr;
    size_t size = 0;
    std::string host, id, header;
    int port = 0;
    size_t chunk = 4 << 20;
    int64_t timeout_ms = 30000;
    // outputs
    bool failed = false;
    NetError error;
    uint32_t status = 0;
    std::string message;
    double seconds = 0;
    // JavaScript-thread objects
    napi_deferred deferred = nullptr;
    napi_ref keep = nullptr;
    napi_threadsafe_function tsfn = nullptr;
};

void send_state(SendJob & j) {
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::milliseconds(j.timeout_ms);
    NetError & err = j.error;
    // A port nobody answers on (a Service without it, a firewall dropping SYNs) must not cost
    // the whole transfer timeout: the caller falls back to HTTP after this.
    int fd = connect_to(j.host, j.port, std::min<int64_t>(j.timeout_ms, 3000), err);
    if (fd < 0) {
        j.failed = true;
        return;
    }
    tune(fd);
    set_timeouts(fd, j.timeout_ms);
    bool ok = true;
    uint32_t head[4] = {KVN_MAGIC, KVN_VERSION, static_cast<uint32_t>(j.id.size()), static_cast<uint32_t>(j.header.size())};
    uint64_t bytes = j.size;
    iovec hv[4] = {{head, sizeof(head)}, {&bytes, sizeof(bytes)}, {j.id.data(), j.id.size()}, {j.header.data(), j.header.size()}};
    ok = send_iov(fd, hv, 4, err) && recv_reply(fd, j.status, j.message, err);
    if (ok && j.status == ST_OK) {
        for (size_t off = 0; ok && off < j.size; off += j.chunk) {
            if (Clock::now() > deadline) {
                err = {"timeout", "hand-off did not finish within " + std::to_string(j.timeout_ms) + " ms"};
                ok = false;
                break;
            }
            const size_t n = std::min(j.chunk, j.size - off);
            uint32_t frame[2] = {static_cast<uint32_t>(n), crc32c(j.data + off, n)};
            iovec v[2] = {{frame, sizeof(frame)}, {const_cast<uint8_t *>(j.data + off), n}};
            ok = send_iov(fd, v, 2, err);
        }
        uint32_t end = 0;
        ok = ok && send_all(fd, &end, sizeof(end), err) && recv_reply(fd, j.status, j.message, err);
    }
    close(fd);
    j.failed = !ok;
    j.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
}

void send_done(napi_env env, napi_value, void *, void * data) {
    auto * j = static_cast<SendJob *>(data);
    if (env) {
        Napi::Env e(env);
        Napi::HandleScope scope(e);
        if (j->failed) {
            Napi::Error err = Napi::Error::New(e, "KV hand-off over TCP to " + j->host + ":" + std::to_string(j->port) + " failed: " + j->error.message);
            err.Set("code", Napi::String::New(e, j->error.code));
            napi_reject_deferred(env, j->deferred, err.Value());
        } else {
            Napi::Object o = Napi::Object::New(e);
            o.Set("status", j->status);
            o.Set("message", j->message);
            o.Set("bytes", static_cast<double>(j->size));
            o.Set("seconds", j->seconds);
            napi_resolve_deferred(env, j->deferred, o);
        }
        napi_delete_reference(env, j->keep);
    }
    delete j;
}

Napi::Value KvSend(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 7 || !info[0].IsTypedArray()) {
        throw_type(env, "kvSend(state: Buffer, host, port, id, header, chunkBytes, timeoutMs)");
        return env.Undefined();
    }
    auto * j = new SendJob();
    std::unique_ptr<SendJob> guard(j);
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    j->data = static_cast<const uint8_t *>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    j->size = ta.ByteLength();
    int32_t port = 0, chunk = 0, timeout = 0;
    if (!arg_string(info, 1, "host", j->host) || !arg_int(info, 2, "port", 1, 65535, port) || !arg_string(info, 3, "id", j->id) ||
        !arg_string(info, 4, "header", j->header) || !arg_int(info, 5, "chunkBytes", 4096, MAX_CHUNK, chunk) ||
        !arg_int(info, 6, "timeoutMs", 1, kMaxI32, timeout)) {
        return env.Undefined();
    }
    if (j->id.empty() || j->id.size() > MAX_ID) {
        throw_range(env, "id must have 1 to 256 bytes");
        return env.Undefined();
    }
    if (j->header.size() > MAX_HEADER) {
        throw_range(env, "header must be at most 1 MiB");
        return env.Undefined();
    }
    j->port = port;
    j->chunk = static_cast<size_t>(chunk);
    j->timeout_ms = timeout;
    napi_value promise;
    napi_create_promise(env, &j->deferred, &promise);
    napi_create_reference(env, info[0], 1, &j->keep);
    napi_value name = Napi::String::New(env, "kvSend");
    if (napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, nullptr, send_done, &j->tsfn) != napi_ok) {
        Napi::Error::New(env, "kvSend: cannot create a thread-safe function").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    guard.release();
    std::thread([j] {
        send_state(*j);
        napi_threadsafe_function tsfn = j->tsfn;
        napi_call_threadsafe_function(tsfn, j, napi_tsfn_blocking);
        napi_release_threadsafe_function(tsfn, napi_tsfn_release);
    }).detach();
    return Napi::Value(env, promise);
}

// ---- receiving ----

struct Staged {
    HostMem mem;
    std::string header;
    double seconds = 0;
    Clock::time_point expires;
};

struct Server {
    int fd = -1;
    int port = 0;
    std::atomic<bool> stop{false};
    std::thread thread;
    size_t max_bytes = 0;
    int max_conns = 0;
    int64_t ttl_ms = 60000;
    int64_t idle_ms = 30000;
    std::string advertise;
    int http_port = 0;
    int32_t handle = 0;

    std::mutex mu;  // guards everything below
    std::map<std::string, Staged> staged;
    size_t staged_bytes = 0;
    size_t reserved = 0;  // bytes of hand-offs being received
    uint64_t received = 0, refused = 0, aborted = 0, expired = 0;
    std::atomic<int> conns{0};

    void sweep_locked() {
        const auto now = Clock::now();
        for (auto it = staged.begin(); it != staged.end();) {
            if (it->second.expires < now) {
                staged_bytes -= it->second.mem.size;
                it->second.mem.release();
                expired++;
                it = staged.erase(it);
            } else {
                ++it;
            }
        }
    }
    void clear() {
        std::lock_guard<std::mutex> lock(mu);
        for (auto & [id, s] : staged) s.mem.release();
        staged.clear();
        staged_bytes = 0;
    }
};

// Listeners by handle (one per decode pod; tests run several pods, even on one port of several
// addresses, in one process). JavaScript thread only.
std::map<int32_t, std::shared_ptr<Server>> g_servers;
int32_t g_next_handle = 1;

std::shared_ptr<Server> server_arg(const Napi::CallbackInfo & info, size_t i) {
    int32_t handle = 0;
    if (!arg_int(info, i, "handle", 1, kMaxI32, handle)) return nullptr;
    auto it = g_servers.find(handle);
    return it == g_servers.end() ? nullptr : it->second;
}

std::string local_ip(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    char buf[INET6_ADDRSTRLEN] = {0};
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) != 0) return "";
    if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in *>(&ss)->sin_addr, buf, sizeof(buf));
    else if (ss.ss_family == AF_INET6) inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_addr, buf, sizeof(buf));
    return buf;
}

// Where the generate call finds the state: the advertised URL; else this pod's HTTP port at the
// address the connection reached (a Service's DNAT lands on the pod's own); else that address alone.
std::string staged_at(const Server & s, int fd) {
    if (!s.advertise.empty()) return s.advertise;
    const std::string ip = local_ip(fd);
    if (s.http_port <= 0 || ip.empty()) return ip;
    return "http://" + (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + std::to_string(s.http_port);
}

void receive(const std::shared_ptr<Server> & s, int fd) {
    const auto t0 = Clock::now();
    tune(fd);
    set_timeouts(fd, s->idle_ms);
    NetError err;
    uint32_t head[4];
    uint64_t bytes = 0;
    std::string id, header;
    auto refuse = [&](uint32_t status, const std::string & msg) {
        NetError ignored;
        send_reply(fd, status, msg, ignored);
        std::lock_guard<std::mutex> lock(s->mu);
        s->refused++;
    };
    if (!recv_all(fd, head, sizeof(head), err) || !recv_all(fd, &bytes, sizeof(bytes), err)) return;
    if (head[0] != KVN_MAGIC || head[1] != KVN_VERSION || head[2] == 0 || head[2] > MAX_ID || head[3] > MAX_HEADER) {
        return refuse(ST_BAD, "not an LFKN v1 hand-off");
    }
    id.resize(head[2]);
    header.resize(head[3]);
    if (!recv_all(fd, id.data(), id.size(), err) || !recv_all(fd, header.data(), header.size(), err)) return;
    {
        std::lock_guard<std::mutex> lock(s->mu);
        s->sweep_locked();
        if (s->staged.count(id)) return (void)(s->refused++, send_reply(fd, ST_EXISTS, "hand-off " + id + " is already staged", err));
        if (bytes > s->max_bytes) {
            s->refused++;
            send_reply(fd, ST_TOO_LARGE, "state of " + std::to_string(bytes) + " bytes exceeds this pod's hand-off budget of " + std::to_string(s->max_bytes), err);
            return;
        }
        if (s->staged_bytes + s->reserved + bytes > s->max_bytes) {
            s->refused++;
            send_reply(fd, ST_FULL, "decode pod's hand-off memory is full; retry later", err);
            return;
        }
        s->reserved += bytes;
    }
    HostMem mem;
    bool ok = HostMem::alloc(static_cast<size_t>(bytes), mem);
    if (!ok) err = {"protocol", "out of host memory"};
    ok = ok && send_reply(fd, ST_OK, "", err);
    uint64_t got = 0;
    while (ok) {
        uint32_t frame[2] = {0, 0};  // length, then (unless it is the end, 0) the CRC
        if (!(ok = recv_all(fd, &frame[0], 4, err))) break;
        if (frame[0] == 0) break;
        if (!(ok = recv_all(fd, &frame[1], 4, err))) break;
        if (frame[0] > MAX_CHUNK || got + frame[0] > bytes) {
            err = {"protocol", "chunk beyond the announced size"};
            ok = false;
            break;
        }
        if (!(ok = recv_all(fd, mem.data + got, frame[0], err))) break;
        if (crc32c(mem.data + got, frame[0]) != frame[1]) {
            err = {"protocol", "chunk at byte " + std::to_string(got) + " failed its CRC-32C check"};
            ok = false;
            break;
        }
        got += frame[0];
    }
    if (ok && got != bytes) {
        err = {"protocol", "stream has " + std::to_string(got) + " bytes, header says " + std::to_string(bytes)};
        ok = false;
    }
    std::lock_guard<std::mutex> lock(s->mu);
    s->reserved -= bytes;
    if (!ok) {
        mem.release();
        s->aborted++;
        if (err.code == "protocol") {
            const std::string why = err.message;
            send_reply(fd, ST_BAD, why, err);
        }
        return;
    }
    Staged st{mem, std::move(header), std::chrono::duration<double>(Clock::now() - t0).count(), Clock::now() + std::chrono::milliseconds(s->ttl_ms)};
    s->staged[id] = std::move(st);
    s->staged_bytes += bytes;
    s->received++;
    send_reply(fd, ST_OK, staged_at(*s, fd), err);
}

void serve(std::shared_ptr<Server> s) {
    while (!s->stop.load()) {
        pollfd p{s->fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) continue;
        const int c = accept4(s->fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        if (s->conns.load() >= s->max_conns) {
            NetError ignored;
            send_reply(c, ST_FULL, "decode pod is receiving too many hand-offs; retry later", ignored);
            close(c);
            std::lock_guard<std::mutex> lock(s->mu);
            s->refused++;
            continue;
        }
        s->conns++;
        std::thread([s, c] {
            receive(s, c);
            close(c);
            s->conns--;
        }).detach();
    }
}

bool opt_num(Napi::Env env, const Napi::Object & o, const char * key, double min, double max, double & out) {
    if (!o.Has(key) || o.Get(key).IsUndefined()) return true;
    Napi::Value v = o.Get(key);
    if (!v.IsNumber() || !(v.As<Napi::Number>().DoubleValue() >= min && v.As<Napi::Number>().DoubleValue() <= max)) {
        return throw_range(env, std::string("options.") + key + " must be a number in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    out = v.As<Napi::Number>().DoubleValue();
    return true;
}

Napi::Value KvListen(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::string host;
    int32_t port = 0;
    if (!arg_string(info, 0, "host", host) || !arg_int(info, 1, "port", 0, 65535, port)) return env.Undefined();
    auto s = std::make_shared<Server>();
    double max_bytes = 4.0 * (1ull << 30), conns = 64, ttl = 60000, idle = 30000, http_port = 0;
    if (info.Length() > 2 && info[2].IsObject()) {
        Napi::Object o = info[2].As<Napi::Object>();
        if (!opt_num(env, o, "maxBytes", 1, 1e15, max_bytes) || !opt_num(env, o, "maxConnections", 1, 4096, conns) || !opt_num(env, o, "ttlMs", 1, 1e9, ttl) ||
            !opt_num(env, o, "idleMs", 1, 1e9, idle) || !opt_num(env, o, "httpPort", 0, 65535, http_port)) {
            return env.Undefined();
        }
        if (o.Has("advertise") && o.Get("advertise").IsString()) s->advertise = o.Get("advertise").As<Napi::String>().Utf8Value();
    }
    s->max_bytes = static_cast<size_t>(max_bytes);
    s->max_conns = static_cast<int>(conns);
    s->ttl_ms = static_cast<int64_t>(ttl);
    s->idle_ms = static_cast<int64_t>(idle);
    s->http_port = static_cast<int>(http_port);
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host.empty() ? nullptr : host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res) {
        Napi::Error::New(env, "kvListen: cannot resolve " + host).ThrowAsJavaScriptException();
        return env.Undefined();
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        const std::string why = std::strerror(errno);
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        Napi::Error::New(env, "kvListen: cannot listen on " + host + ":" + std::to_string(port) + ": " + why).ThrowAsJavaScriptException();
        return env.Undefined();
    }
    freeaddrinfo(res);
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len);
    s->port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_port : reinterpret_cast<sockaddr_in *>(&ss)->sin_port);
    s->fd = fd;
    s->thread = std::thread(serve, s);
    s->handle = g_next_handle++;
    g_servers[s->handle] = s;
    Napi::Object out = Napi::Object::New(env);
    out.Set("port", s->port);
    out.Set("handle", s->handle);
    return out;
}

Napi::Value KvTake(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::string id;
    auto s = server_arg(info, 0);
    if (env.IsExceptionPending() || !arg_string(info, 1, "id", id)) return env.Undefined();
    if (!s) return env.Null();
    Staged st;
    {
        std::lock_guard<std::mutex> lock(s->mu);
        s->sweep_locked();
        auto it = s->staged.find(id);
        if (it == s->staged.end()) return env.Null();
        st = std::move(it->second);
        s->staged.erase(it);
        s->staged_bytes -= st.mem.size;
    }
    const size_t n = st.mem.size;
    Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(n));
    auto * owned = new HostMem(st.mem);
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::New(
        env, owned->data, n,
        [n](Napi::Env e, uint8_t *, HostMem * m) {
            m->release();
            delete m;
            Napi::MemoryManagement::AdjustExternalMemory(e, -static_cast<int64_t>(n));
        },
        owned);
    Napi::Object o = Napi::Object::New(env);
    o.Set("state", buf);
    o.Set("header", st.header);
    o.Set("seconds", st.seconds);
    o.Set("pinned", owned->pinned != nullptr);
    return o;
}

Napi::Value KvStats(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    auto s = server_arg(info, 0);
    if (env.IsExceptionPending()) return env.Undefined();
    if (!s) {
        o.Set("listening", false);
        return o;
    }
    std::lock_guard<std::mutex> lock(s->mu);
    s->sweep_locked();
    o.Set("listening", true);
    o.Set("port", s->port);
    o.Set("staged", static_cast<double>(s->staged.size()));
    o.Set("stagedBytes", static_cast<double>(s->staged_bytes));
    o.Set("receivingBytes", static_cast<double>(s->reserved));
    o.Set("connections", s->conns.load());
    o.Set("received", static_cast<double>(s->received));
    o.Set("refused", static_cast<double>(s->refused));
    o.Set("aborted", static_cast<double>(s->aborted));
    o.Set("expired", static_cast<double>(s->expired));
    return o;
}

Napi::Value KvClose(const Napi::CallbackInfo & info) {
    auto s = server_arg(info, 0);
    if (info.Env().IsExceptionPending()) return info.Env().Undefined();
    if (s) {
        s->stop = true;
        if (s->thread.joinable()) s->thread.join();
        close(s->fd);
        s->clear();
        g_servers.erase(s->handle);
    }
    return info.Env().Undefined();
}

Napi::Value KvChecksum(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsTypedArray()) {
        throw_type(env, "kvChecksum(bytes: Uint8Array)");
        return env.Undefined();
    }
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    return Napi::Number::New(env, crc32c(static_cast<const uint8_t *>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), ta.ByteLength()));
}

}  // namespace

void InitKvStream(Napi::Env env, Napi::Object exports) {
    exports.Set("kvSend", Napi::Function::New(env, KvSend));
    exports.Set("kvListen", Napi::Function::New(env, KvListen));
    exports.Set("kvTake", Napi::Function::New(env, KvTake));
    exports.Set("kvStats", Napi::Function::New(env, KvStats));
    exports.Set("kvClose", Napi::Function::New(env, KvClose));
    exports.Set("kvChecksum", Napi::Function::New(env, KvChecksum));
}

}  // namespace llmfleet_addon
