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
// kvPause(handle, paused): pauses nest (each true needs its false): while any is held the listener
//   reads no further chunk of the hand-offs it is receiving (their senders block on TCP's flow
//   control), each connection at most kMaxPauseMs in all: the kvstore holds pods' uploads back
//   while it pushes loads, which on one host otherwise shared the memory and the cores with them
//   and took 2-4x as long.
#include "kv-stream.h"
#include "task-threads.h"

#include "addon.h"
#include "kv-net.h"
#include "pool-buffer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ggml-backend.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace llmfleet_addon {

namespace {

using namespace kvnet;
using Clock = std::chrono::steady_clock;


// ---- receiving ----

struct Staged {
    HostMem mem;
    std::string header;
    double seconds = 0;
    Clock::time_point expires;
};

// A v2 hand-off whose stripes are arriving: the whole state's memory, what each stripe covered.
// Held by the threads of its connections (shared_ptr): a failed hand-off's memory goes back to the
// pool when the last of them lets go.
struct Assembly {
    HostMem mem;
    uint64_t bytes = 0;
    uint32_t count = 0;
    std::vector<std::pair<uint64_t, uint64_t>> parts;  // per stripe: offset, bytes (once arrived)
    std::vector<char> joined;
    uint32_t done = 0;
    bool failed = false;
    std::string why;
    std::vector<int> fds;  // joiners' connections, shut down when the hand-off fails
    Clock::time_point progress;
    std::condition_variable cv;

    ~Assembly() { mem.release(); }
    void fail(const std::string & reason) {
        if (!failed) why = reason;
        failed = true;
        for (int fd : fds) shutdown(fd, SHUT_RDWR);
        cv.notify_all();
    }
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
    std::map<std::string, std::shared_ptr<Assembly>> assembling;
    size_t staged_bytes = 0;
    size_t reserved = 0;  // bytes of hand-offs being received
    uint64_t received = 0, refused = 0, aborted = 0, expired = 0;
    std::atomic<int> conns{0};
    std::atomic<int> paused{0};           // kvPause holds (nested); > 0: paused
    std::atomic<uint64_t> paused_us{0};   // time connections waited while paused, all together

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

// The longest a connection waits in all while its listener is paused (kvPause), so that a sender's
// own timeout (a pod's --kv-store-timeout-ms, default 5 s) never fires because of a pause.
constexpr int64_t kMaxPauseMs = 2000;

// Before a connection's next chunk: waits while the listener is paused, up to what is left of its
// kMaxPauseMs; `waited` (microseconds) carries over from chunk to chunk.
void wait_while_paused(Server & s, int64_t & waited) {
    if (s.paused.load(std::memory_order_relaxed) <= 0 || waited >= kMaxPauseMs * 1000) return;
    const auto t0 = Clock::now();
    while (s.paused.load(std::memory_order_relaxed) > 0 && !s.stop.load() &&
           std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count() + waited < kMaxPauseMs * 1000) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
    waited += us;
    s.paused_us += static_cast<uint64_t>(us);
}

// Receives chunks into mem[off, off + len) until the end mark; false with err set on any fault.
// `s`: the listener, whose kvPause holds the next chunk back.
bool receive_chunks(Server & s, int fd, uint8_t * base, uint64_t off, uint64_t len, NetError & err, Assembly * progress = nullptr, std::mutex * mu = nullptr) {
    uint64_t got = 0;
    int64_t waited = 0;
    while (true) {
        wait_while_paused(s, waited);
        uint32_t frame[2] = {0, 0};  // length, then (unless it is the end, 0) the CRC
        if (!recv_all(fd, &frame[0], 4, err)) return false;
        if (frame[0] == 0) break;
        if (!recv_all(fd, &frame[1], 4, err)) return false;
        if (frame[0] > MAX_CHUNK || got + frame[0] > len) {
            err = {"protocol", "chunk beyond the announced size"};
            return false;
        }
        uint8_t * at = base + off + got;
        if (!recv_all(fd, at, frame[0], err)) return false;
        if (crc32c(at, frame[0]) != frame[1]) {
            err = {"protocol", "chunk at byte " + std::to_string(off + got) + " failed its CRC-32C check"};
            return false;
        }
        got += frame[0];
        if (progress) {
            std::lock_guard<std::mutex> lock(*mu);
            progress->progress = Clock::now();
        }
    }
    if (got != len) {
        err = {"protocol", "stream has " + std::to_string(got) + " bytes, header says " + std::to_string(len)};
        return false;
    }
    return true;
}

// Checks a new hand-off's size against the budget and reserves it; false after refusing (a reply sent).
bool admit_locked(Server & s, int fd, const std::string & id, uint64_t bytes, NetError & err) {
    s.sweep_locked();
    if (s.staged.count(id) || s.assembling.count(id)) {
        s.refused++;
        send_reply(fd, ST_EXISTS, "hand-off " + id + " is already staged", err);
        return false;
    }
    if (bytes > s.max_bytes) {
        s.refused++;
        send_reply(fd, ST_TOO_LARGE, "state of " + std::to_string(bytes) + " bytes exceeds this pod's hand-off budget of " + std::to_string(s.max_bytes), err);
        return false;
    }
    if (s.staged_bytes + s.reserved + bytes > s.max_bytes) {
        s.refused++;
        send_reply(fd, ST_FULL, "decode pod's hand-off memory is full; retry later", err);
        return false;
    }
    s.reserved += bytes;
    return true;
}

void stage_locked(Server & s, const std::string & id, HostMem mem, std::string header, Clock::time_point t0) {
    Staged st{mem, std::move(header), std::chrono::duration<double>(Clock::now() - t0).count(), Clock::now() + std::chrono::milliseconds(s.ttl_ms)};
    s.staged_bytes += st.mem.size;
    s.staged[id] = std::move(st);
    s.received++;
}

void receive_single(const std::shared_ptr<Server> & s, int fd, Clock::time_point t0, const std::string & id, std::string header, uint64_t bytes) {
    NetError err;
    {
        std::lock_guard<std::mutex> lock(s->mu);
        if (!admit_locked(*s, fd, id, bytes, err)) return;
    }
    HostMem mem;
    bool ok = HostMem::alloc(static_cast<size_t>(bytes), mem);
    if (!ok) err = {"protocol", "out of host memory"};
    ok = ok && send_reply(fd, ST_OK, "", err) && receive_chunks(*s, fd, mem.data, 0, bytes, err);
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
    stage_locked(*s, id, mem, std::move(header), t0);
    send_reply(fd, ST_OK, staged_at(*s, fd), err);
}

// True when the stripes' ranges cover [0, bytes) exactly once.
bool tiles(std::vector<std::pair<uint64_t, uint64_t>> parts, uint64_t bytes) {
    std::sort(parts.begin(), parts.end());
    uint64_t at = 0;
    for (const auto & [off, len] : parts) {
        if (off != at) return false;
        at += len;
    }
    return at == bytes;
}

// Stripe 0 of a v2 hand-off: reserves and allocates the state, receives its own stripe, waits for
// the others, stages the state and answers for the whole hand-off.
void receive_owner(const std::shared_ptr<Server> & s, int fd, Clock::time_point t0, const std::string & id, std::string header, uint64_t bytes, uint32_t count,
                   uint64_t off, uint64_t len) {
    NetError err;
    auto a = std::make_shared<Assembly>();
    a->bytes = bytes;
    a->count = count;
    a->parts.assign(count, {0, 0});
    a->joined.assign(count, 0);
    a->joined[0] = 1;
    {
        std::lock_guard<std::mutex> lock(s->mu);
        if (!admit_locked(*s, fd, id, bytes, err)) return;
        s->assembling[id] = a;  // joiners wait for stripe 0's "go on", so none looks before mem is set
    }
    HostMem mem0;
    const bool allocated = HostMem::alloc(static_cast<size_t>(bytes), mem0);
    {
        std::lock_guard<std::mutex> lock(s->mu);
        a->mem = mem0;
        a->progress = Clock::now();
    }
    bool ok = allocated && send_reply(fd, ST_OK, "", err);
    if (!allocated) err = {"protocol", "out of host memory"};
    ok = ok && receive_chunks(*s, fd, a->mem.data, off, len, err, a.get(), &s->mu);
    std::unique_lock<std::mutex> lock(s->mu);
    if (ok) {
        a->parts[0] = {off, len};
        a->done++;
    } else {
        a->fail(err.message);
    }
    // The other stripes: each one's arrival (or failure) wakes this thread; a hand-off whose
    // stripes stall for idleMs, or whose sender hangs up, is dropped.
    while (!a->failed && a->done < a->count) {
        a->cv.wait_for(lock, std::chrono::milliseconds(100));
        if (a->failed || a->done >= a->count) break;
        if (Clock::now() - a->progress > std::chrono::milliseconds(s->idle_ms)) {
            a->fail("a stripe of the hand-off did not arrive within " + std::to_string(s->idle_ms) + " ms");
            break;
        }
        pollfd p{fd, POLLRDHUP, 0};
        if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) a->fail("the sender closed the hand-off");
    }
    if (!a->failed && !tiles(a->parts, a->bytes)) a->fail("the stripes do not cover the state exactly once");
    s->assembling.erase(id);
    s->reserved -= bytes;
    if (a->failed) {
        s->aborted++;
        const std::string why = a->why;
        lock.unlock();
        NetError ignored;
        send_reply(fd, ST_BAD, why, ignored);
        return;
    }
    HostMem mem = a->mem;
    a->mem = HostMem{};
    stage_locked(*s, id, mem, std::move(header), t0);
    const std::string url = staged_at(*s, fd);
    lock.unlock();
    send_reply(fd, ST_OK, url, err);
}

// Stripe 1..n-1 of a v2 hand-off: joins the assembly stripe 0 opened and fills its range.
void receive_joiner(const std::shared_ptr<Server> & s, int fd, const std::string & id, uint64_t bytes, uint32_t index, uint32_t count, uint64_t off, uint64_t len) {
    NetError err;
    std::shared_ptr<Assembly> a;
    {
        std::lock_guard<std::mutex> lock(s->mu);
        auto it = s->assembling.find(id);
        std::string why;
        if (it == s->assembling.end()) why = "no hand-off " + id + " is being received";
        else if (it->second->bytes != bytes || it->second->count != count) why = "stripe " + std::to_string(index) + " disagrees with stripe 0 on the state's size or stripes";
        else if (it->second->joined[index]) why = "stripe " + std::to_string(index) + " arrived twice";
        else if (it->second->failed) why = it->second->why;
        else if (!it->second->mem.data) why = "stripe " + std::to_string(index) + " arrived before stripe 0 was accepted";
        if (!why.empty()) {
            s->refused++;
            send_reply(fd, ST_BAD, why, err);
            return;
        }
        a = it->second;
        a->joined[index] = 1;
        a->fds.push_back(fd);
    }
    bool ok = send_reply(fd, ST_OK, "", err) && receive_chunks(*s, fd, a->mem.data, off, len, err, a.get(), &s->mu);
    {
        std::lock_guard<std::mutex> lock(s->mu);
        a->fds.erase(std::remove(a->fds.begin(), a->fds.end(), fd), a->fds.end());
        if (ok) {
            a->parts[index] = {off, len};
            a->done++;
            a->cv.notify_all();
        } else {
            a->fail("stripe " + std::to_string(index) + ": " + err.message);
        }
    }
    if (ok) send_reply(fd, ST_OK, "", err);
    else if (err.code == "protocol") send_reply(fd, ST_BAD, err.message, err);
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
    const bool striped = head[1] == KVN_VERSION_STRIPED;
    if (head[0] != KVN_MAGIC || (head[1] != KVN_VERSION && !striped) || head[2] == 0 || head[2] > MAX_ID || head[3] > MAX_HEADER) {
        return refuse(ST_BAD, "not an LFKN v1 or v2 hand-off");
    }
    uint32_t stripe[2] = {0, 1};
    uint64_t range[2] = {0, bytes};
    if (striped && (!recv_all(fd, stripe, sizeof(stripe), err) || !recv_all(fd, range, sizeof(range), err))) return;
    id.resize(head[2]);
    header.resize(head[3]);
    if (!recv_all(fd, id.data(), id.size(), err) || !recv_all(fd, header.data(), header.size(), err)) return;
    if (!striped) return receive_single(s, fd, t0, id, std::move(header), bytes);
    const auto [index, count] = std::pair<uint32_t, uint32_t>(stripe[0], stripe[1]);
    if (count < 2 || count > MAX_STRIPES || index >= count || range[0] > bytes || range[1] > bytes - range[0]) {
        return refuse(ST_BAD, "stripe " + std::to_string(index) + " of " + std::to_string(count) + " is out of range");
    }
    if (index == 0) receive_owner(s, fd, t0, id, std::move(header), bytes, count, range[0], range[1]);
    else receive_joiner(s, fd, id, bytes, index, count, range[0], range[1]);
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
        run_task([s, c] {
            receive(s, c);
            close(c);
            s->conns--;
        });
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
    const bool pinned = st.mem.pinned();
    Napi::Buffer<uint8_t> buf = pool_buffer(env, st.mem.block, st.mem.size);
    st.mem = HostMem();  // the Buffer owns the block now
    Napi::Object o = Napi::Object::New(env);
    o.Set("state", buf);
    o.Set("header", st.header);
    o.Set("seconds", st.seconds);
    o.Set("pinned", pinned);
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
    o.Set("assembling", static_cast<double>(s->assembling.size()));
    o.Set("connections", s->conns.load());
    o.Set("received", static_cast<double>(s->received));
    o.Set("refused", static_cast<double>(s->refused));
    o.Set("aborted", static_cast<double>(s->aborted));
    o.Set("expired", static_cast<double>(s->expired));
    o.Set("pausedSeconds", static_cast<double>(s->paused_us.load()) / 1e6);
    return o;
}

Napi::Value KvPause(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = server_arg(info, 0);
    if (env.IsExceptionPending()) return env.Undefined();
    if (info.Length() < 2 || !info[1].IsBoolean()) {
        Napi::TypeError::New(env, "kvPause(handle: number, paused: boolean)").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    if (s) {
        // A release without a hold leaves the count at 0 (a caller's stray false never pauses).
        if (info[1].As<Napi::Boolean>().Value()) s->paused++;
        else for (int n = s->paused.load(); n > 0 && !s->paused.compare_exchange_weak(n, n - 1);) {}
    }
    return Napi::Boolean::New(env, s != nullptr);
}

Napi::Value KvClose(const Napi::CallbackInfo & info) {
    auto s = server_arg(info, 0);
    if (info.Env().IsExceptionPending()) return info.Env().Undefined();
    if (s) {
        s->stop = true;
        // Wakes the accept loop's poll at once (else it notices stop within its 200 ms timeout,
        // which held the event loop that long when a pod closed its listener).
        shutdown(s->fd, SHUT_RDWR);
        if (s->thread.joinable()) s->thread.join();
        close(s->fd);
        s->clear();
        g_servers.erase(s->handle);
    }
    return info.Env().Undefined();
}

Napi::Value KvPoolStats(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const hostpool::Stats st = hostpool::stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("hits", static_cast<double>(st.hits));
    o.Set("misses", static_cast<double>(st.misses));
    o.Set("freed", static_cast<double>(st.freed));
    o.Set("cachedBytes", static_cast<double>(st.cached_bytes));
    o.Set("cachedBlocks", static_cast<double>(st.cached_blocks));
    o.Set("outstandingBytes", static_cast<double>(st.outstanding_bytes));
    o.Set("capBytes", static_cast<double>(st.cap_bytes));
    o.Set("warmBytes", static_cast<double>(st.warm_bytes));
    o.Set("warmUsedBytes", static_cast<double>(st.warm_used_bytes));
    o.Set("warmHits", static_cast<double>(st.warm_hits));
    o.Set("pinned", st.pinned);
    return o;
}

Napi::Value KvTaskThreads(const Napi::CallbackInfo & info) {
    const TaskThreadStats st = task_thread_stats();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("threads", st.threads);
    o.Set("idle", st.idle);
    o.Set("started", static_cast<double>(st.started));
    return o;
}

}  // namespace

void InitKvStream(Napi::Env env, Napi::Object exports) {
    exports.Set("kvSend", Napi::Function::New(env, KvSend));
    exports.Set("kvListen", Napi::Function::New(env, KvListen));
    exports.Set("kvTake", Napi::Function::New(env, KvTake));
    exports.Set("kvStats", Napi::Function::New(env, KvStats));
    exports.Set("kvClose", Napi::Function::New(env, KvClose));
    exports.Set("kvPause", Napi::Function::New(env, KvPause));
    exports.Set("kvChecksum", Napi::Function::New(env, KvChecksum));
    exports.Set("kvGather", Napi::Function::New(env, KvGather));
    exports.Set("kvScatter", Napi::Function::New(env, KvScatter));
    exports.Set("kvPoolStats", Napi::Function::New(env, KvPoolStats));
    exports.Set("kvTaskThreads", Napi::Function::New(env, KvTaskThreads));
    exports.Set("kvRelease", Napi::Function::New(env, KvRelease));
    exports.Set("kvAlloc", Napi::Function::New(env, KvAlloc));
    exports.Set("kvAllocAsync", Napi::Function::New(env, KvAllocAsync));
    exports.Set("kvPoolWarm", Napi::Function::New(env, KvPoolWarm));
}

}  // namespace llmfleet_addon
