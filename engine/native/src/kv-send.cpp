// The sending side of the network KV hand-off (kvSend, kvChecksum): wire format in kv-stream.h.
#include "addon.h"
#include "kv-net.h"
#include "kv-stream.h"
#include "task-threads.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <string>
#include <mutex>
#include <utility>
#include <vector>

namespace llmfleet_addon {

namespace {

using namespace kvnet;
using Clock = std::chrono::steady_clock;

// ---- sending ----

struct SendJob {
    // inputs (the state is read in place; `keep` holds its Buffer until the promise settles)
    const uint8_t * data = nullptr;
    size_t size = 0;
    std::string host, id, header;
    int port = 0;
    size_t chunk = 4 << 20;
    int64_t timeout_ms = 30000;
    int streams = 1;
    // outputs
    bool failed = false;
    NetError error;
    uint32_t status = 0;
    std::string message;
    double seconds = 0;
    int used_streams = 1;
    // JavaScript-thread objects
    napi_deferred deferred = nullptr;
    napi_ref keep = nullptr;
    napi_threadsafe_function tsfn = nullptr;
};

// Sends bytes [off, off + len) of the state as chunks, then the end mark.
bool send_chunks(int fd, const SendJob & j, size_t off, size_t len, Clock::time_point deadline, NetError & err) {
    const size_t end = off + len;
    for (size_t at = off; at < end; at += j.chunk) {
        if (Clock::now() > deadline) {
            err = {"timeout", "hand-off did not finish within " + std::to_string(j.timeout_ms) + " ms"};
            return false;
        }
        const size_t n = std::min(j.chunk, end - at);
        uint32_t frame[2] = {static_cast<uint32_t>(n), crc32c(j.data + at, n)};
        iovec v[2] = {{frame, sizeof(frame)}, {const_cast<uint8_t *>(j.data + at), n}};
        if (!send_iov(fd, v, 2, err)) return false;
    }
    uint32_t zero = 0;
    return send_all(fd, &zero, sizeof(zero), err);
}

// Connects and sends a hand-off's opening: v1 (the whole state) when count is 1, else stripe
// `index` of `count` (v2, the header on stripe 0 only); the receiver's answer in status/message.
// A port nobody answers on (a Service without it, a firewall dropping SYNs) must not cost the whole
// transfer timeout: the caller falls back to HTTP after this.
int open_handoff(const SendJob & j, uint32_t index, uint32_t count, uint64_t off, uint64_t len, uint32_t & status, std::string & message, NetError & err) {
    int fd = connect_to(j.host, j.port, std::min<int64_t>(j.timeout_ms, 3000), err);
    if (fd < 0) return -1;
    tune(fd);
    set_timeouts(fd, j.timeout_ms);
    const bool striped = count > 1;
    const std::string & header = index == 0 ? j.header : std::string();
    uint32_t head[4] = {KVN_MAGIC, striped ? KVN_VERSION_STRIPED : KVN_VERSION, static_cast<uint32_t>(j.id.size()), static_cast<uint32_t>(header.size())};
    uint64_t bytes = j.size;
    uint32_t stripe[2] = {index, count};
    uint64_t range[2] = {off, len};
    iovec v1[4] = {{head, sizeof(head)}, {&bytes, sizeof(bytes)}, {const_cast<char *>(j.id.data()), j.id.size()}, {const_cast<char *>(header.data()), header.size()}};
    iovec v2[6] = {v1[0], v1[1], {stripe, sizeof(stripe)}, {range, sizeof(range)}, v1[2], v1[3]};
    if (!(striped ? send_iov(fd, v2, 6, err) : send_iov(fd, v1, 4, err)) || !recv_reply(fd, status, message, err)) {
        close(fd);
        return -1;
    }
    return fd;
}

// v1: the whole state over one connection.
void send_single(SendJob & j, Clock::time_point deadline) {
    NetError & err = j.error;
    int fd = open_handoff(j, 0, 1, 0, j.size, j.status, j.message, err);
    bool ok = fd >= 0;
    if (ok && j.status == ST_OK) ok = send_chunks(fd, j, 0, j.size, deadline, err) && recv_reply(fd, j.status, j.message, err);
    if (fd >= 0) close(fd);
    j.failed = !ok;
}

// Counts the stripe tasks down; shared with them, so the last one's done() never touches a
// sender's stack that wait() has left.
class Latch {
public:
    explicit Latch(uint32_t n) : n_(n) {}
    void done() {
        std::lock_guard<std::mutex> lock(mu_);
        if (--n_ == 0) zero_.notify_all();
    }
    void wait() {
        std::unique_lock<std::mutex> lock(mu_);
        zero_.wait(lock, [this] { return n_ == 0; });
    }

private:
    std::mutex mu_;
    std::condition_variable zero_;
    uint32_t n_;
};

// v2: stripe 0 opens the hand-off; once the receiver has said yes, stripes 1..n-1 go on their own
// connections and threads while this thread sends stripe 0. Any stripe failing fails the hand-off
// (the receiver drops it whole); stripe 0's last answer is the hand-off's.
void send_striped(SendJob & j, Clock::time_point deadline) {
    const size_t chunks = (j.size + j.chunk - 1) / j.chunk;
    const uint32_t count = static_cast<uint32_t>(std::min<size_t>(j.streams, std::max<size_t>(chunks, 1)));
    const size_t per = (chunks + count - 1) / count * j.chunk;
    auto range = [&](uint32_t i) {
        const size_t off = std::min(j.size, i * per);
        return std::pair<size_t, size_t>(off, std::min(j.size, off + per) - off);
    };
    j.used_streams = static_cast<int>(count);
    NetError & err = j.error;
    const auto [off0, len0] = range(0);
    int fd0 = open_handoff(j, 0, count, off0, len0, j.status, j.message, err);
    if (fd0 < 0) {
        j.failed = true;
        return;
    }
    if (j.status != ST_OK) {
        close(fd0);
        return;
    }
    std::mutex mu;
    std::vector<int> fds(count, -1);
    bool aborted = false;
    NetError first;  // the first stripe's failure: the others' come from the abort
    uint32_t refusal = ST_OK;  // a stripe the receiver refused (full: too many connections now)
    std::string refusal_message;
    auto abort_all = [&](const NetError & e) {
        std::lock_guard<std::mutex> lock(mu);
        if (!aborted) first = e;
        aborted = true;
        for (int fd : fds) if (fd >= 0) shutdown(fd, SHUT_RDWR);
    };
    fds[0] = fd0;
    auto stripes = std::make_shared<Latch>(count - 1);  // stripes 1..n-1 still sending
    for (uint32_t i = 1; i < count; i++) {
        run_task([&, i, stripes] {
            const auto [off, len] = range(i);
            uint32_t status = 0;
            std::string message;
            NetError e;
            int fd = open_handoff(j, i, count, off, len, status, message, e);
            bool ok = fd >= 0;
            if (ok) {
                std::lock_guard<std::mutex> lock(mu);
                if (aborted) shutdown(fd, SHUT_RDWR);
                fds[i] = fd;
            }
            auto refused = [&] {
                e = {"protocol", "stripe " + std::to_string(i) + " refused (status " + std::to_string(status) + "): " + message};
                ok = false;
            };
            if (ok && status != ST_OK) {
                refused();
                std::lock_guard<std::mutex> lock(mu);
                if (refusal == ST_OK) refusal = status, refusal_message = message;
            }
            ok = ok && send_chunks(fd, j, off, len, deadline, e) && recv_reply(fd, status, message, e);
            if (ok && status != ST_OK) refused();
            if (fd >= 0) {
                std::lock_guard<std::mutex> lock(mu);
                fds[i] = -1;
                close(fd);
            }
            if (!ok) abort_all(e);
            stripes->done();
        });
    }
    NetError e0;
    if (!send_chunks(fd0, j, off0, len0, deadline, e0)) abort_all(e0);
    stripes->wait();
    bool ok = !aborted;
    if (!ok) err = first;
    if (refusal == ST_FULL) {
        // The receiver had no room for another connection: a refusal the caller retries (429), not a failure.
        close(fd0);
        j.status = refusal;
        j.message = refusal_message;
        j.failed = false;
        return;
    }
    // Stripe 0's answer waits for every stripe; after a failure it says why (or the socket is shut).
    uint32_t status = 0;
    std::string message;
    NetError last;
    if (recv_reply(fd0, status, message, last)) {
        j.status = status;
        j.message = message;
        if (status != ST_OK) ok = true;  // a refusal with its reason is an answer, not a transport failure
    } else if (ok) {
        err = last;
        ok = false;
    }
    {
        std::lock_guard<std::mutex> lock(mu);
        fds[0] = -1;
    }
    close(fd0);
    j.failed = !ok;
}

void send_state(SendJob & j) {
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::milliseconds(j.timeout_ms);
    if (j.streams > 1 && j.size > j.chunk) send_striped(j, deadline);
    else send_single(j, deadline);
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
            o.Set("streams", j->used_streams);
            napi_resolve_deferred(env, j->deferred, o);
        }
        napi_delete_reference(env, j->keep);
    }
    delete j;
}

}  // namespace

Napi::Value KvSend(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 7 || !info[0].IsTypedArray()) {
        throw_type(env, "kvSend(state: Buffer, host, port, id, header, chunkBytes, timeoutMs, streams?)");
        return env.Undefined();
    }
    auto * j = new SendJob();
    std::unique_ptr<SendJob> guard(j);
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    j->data = static_cast<const uint8_t *>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    j->size = ta.ByteLength();
    int32_t port = 0, chunk = 0, timeout = 0, streams = 1;
    if (!arg_string(info, 1, "host", j->host) || !arg_int(info, 2, "port", 1, 65535, port) || !arg_string(info, 3, "id", j->id) ||
        !arg_string(info, 4, "header", j->header) || !arg_int(info, 5, "chunkBytes", 4096, MAX_CHUNK, chunk) ||
        !arg_int(info, 6, "timeoutMs", 1, kMaxI32, timeout) ||
        (info.Length() > 7 && !info[7].IsUndefined() && !arg_int(info, 7, "streams", 1, MAX_STRIPES, streams))) {
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
    j->streams = streams;
    napi_value promise;
    napi_create_promise(env, &j->deferred, &promise);
    napi_create_reference(env, info[0], 1, &j->keep);
    napi_value name = Napi::String::New(env, "kvSend");
    if (napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, nullptr, send_done, &j->tsfn) != napi_ok) {
        Napi::Error::New(env, "kvSend: cannot create a thread-safe function").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    guard.release();
    run_task([j] {
        send_state(*j);
        napi_threadsafe_function tsfn = j->tsfn;
        napi_call_threadsafe_function(tsfn, j, napi_tsfn_blocking);
        napi_release_threadsafe_function(tsfn, napi_tsfn_release);
    });
    return Napi::Value(env, promise);
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

}  // namespace llmfleet_addon
