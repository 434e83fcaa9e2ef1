// The sending side of the network KV hand-off (kvSend, kvChecksum): wire format in kv-stream.h.
#include "addon.h"
#include "kv-net.h"
#include "kv-stream.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

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

}  // namespace

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
