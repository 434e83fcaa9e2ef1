// kvGather: a KV store write-back's blocks cut out of a sequence state on a worker thread; and
// kvScatter, the way back: a load's block placed into the state it assembles.
//
// A v2 entry's kv block i holds, for every layer, the K and V rows of the positions of block i
// (engine/kvstore/kv-blocks.ts). Cutting a GPU pod's 1 GB state into them in JavaScript meant a
// copy of the state for the codec worker, made on the event loop a slice at a time, and a second
// copy there; the event loop was busy for much of the write-back, and every step of a request
// arriving meanwhile waited for it (bench:http's reuse rows: +165 ms on an H100 for a request sent
// during a write-back, though the export itself held the engine for 19 ms). Here the rows are
// copied once, into a host-pool block, off the event loop, and each block's CRC-32C (what the
// manifest names) is taken on the same thread while its bytes are still in cache.
#include "kv-stream.h"

#include "addon.h"
#include "kv-net.h"
#include "pool-buffer.h"

#include <cstring>
#include <vector>

namespace llmfleet_addon {

namespace {

struct Gathered {
    hostpool::Block block;
    std::vector<uint32_t> crcs;
};

// Non-negative integer doubles (offsets and lengths), or false.
bool whole(double v) { return v >= 0 && v <= 1099511627776.0 && v == static_cast<double>(static_cast<uint64_t>(v)); }

// The runs (srcOffset, dstOffset, length triples) of `r`, checked to lie within a source of src_len
// and a destination of dst_len bytes; on a bad run a RangeError naming it ("fn: run i lies outside
// the source or the <dst_name>") is thrown and false returned.
bool read_runs(Napi::Env env, const double * r, size_t n, size_t src_len, size_t dst_len, const char * fn, const char * dst_name, std::vector<uint64_t> & runs) {
    runs.assign(r, r + n);
    for (size_t i = 0; i < n; i += 3) {
        if (!whole(r[i]) || !whole(r[i + 1]) || !whole(r[i + 2]) || runs[i] + runs[i + 2] > src_len || runs[i + 1] + runs[i + 2] > dst_len) {
            Napi::RangeError::New(env, std::string(fn) + ": run " + std::to_string(i / 3) + " lies outside the source or the " + dst_name).ThrowAsJavaScriptException();
            return false;
        }
    }
    return true;
}

}  // namespace

// kvGather(src, runs, bytes, blockEnds) -> Promise<{ data: Buffer, crcs: Uint32Array }>
//   runs: Float64Array of (srcOffset, dstOffset, length) triples; bytes: the output's size;
//   blockEnds: Float64Array, ascending, the end of each block in the output (the last = bytes).
Napi::Value KvGather(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const char * usage = "kvGather(src: Uint8Array, runs: Float64Array, bytes: number, blockEnds: Float64Array)";
    if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsNumber() || !info[3].IsTypedArray()) {
        Napi::TypeError::New(env, usage).ThrowAsJavaScriptException();
        return env.Undefined();
    }
    Napi::TypedArray src_ta = info[0].As<Napi::TypedArray>();
    Napi::TypedArray runs_ta = info[1].As<Napi::TypedArray>();
    Napi::TypedArray ends_ta = info[3].As<Napi::TypedArray>();
    const double bytes_d = info[2].As<Napi::Number>().DoubleValue();
    if (runs_ta.TypedArrayType() != napi_float64_array || ends_ta.TypedArrayType() != napi_float64_array || runs_ta.ElementLength() % 3 != 0 ||
        !whole(bytes_d) || bytes_d < 1) {
        Napi::TypeError::New(env, usage).ThrowAsJavaScriptException();
        return env.Undefined();
    }
    const uint8_t * src = static_cast<const uint8_t *>(src_ta.ArrayBuffer().Data()) + src_ta.ByteOffset();
    const size_t src_len = src_ta.ByteLength();
    const size_t bytes = static_cast<size_t>(bytes_d);
    std::vector<uint64_t> runs;
    if (!read_runs(env, runs_ta.As<Napi::Float64Array>().Data(), runs_ta.ElementLength(), src_len, bytes, "kvGather", "output", runs)) return env.Undefined();
    const double * e = ends_ta.As<Napi::Float64Array>().Data();
    std::vector<uint64_t> ends(e, e + ends_ta.ElementLength());
    for (size_t i = 0; i < ends.size(); i++) {
        if (!whole(e[i]) || (i > 0 && ends[i] < ends[i - 1]) || ends[i] > bytes) {
            Napi::RangeError::New(env, "kvGather: blockEnds must ascend within the output").ThrowAsJavaScriptException();
            return env.Undefined();
        }
    }
    // The source stays alive while the worker reads it (owner: a persistent reference).
    return queue<Gathered>(
        env, src_ta.As<Napi::Object>(),
        [src, bytes, runs = std::move(runs), ends = std::move(ends)](std::string & error) {
            Gathered g;
            g.block = hostpool::acquire(bytes);
            if (!g.block.data) {
                error = "kvGather: out of host memory";
                return g;
            }
            for (size_t i = 0; i < runs.size(); i += 3) std::memcpy(g.block.data + runs[i + 1], src + runs[i], runs[i + 2]);
            uint64_t at = 0;
            for (uint64_t end : ends) {
                g.crcs.push_back(kvnet::crc32c(g.block.data + at, end - at));
                at = end;
            }
            return g;
        },
        [bytes](Napi::Env env, Gathered & g) -> Napi::Value {
            Napi::Object out = Napi::Object::New(env);
            out.Set("data", pool_buffer(env, g.block, bytes));
            g.block = hostpool::Block{};  // the Buffer owns it now
            Napi::Uint32Array crcs = Napi::Uint32Array::New(env, g.crcs.size());
            std::memcpy(crcs.Data(), g.crcs.data(), 4 * g.crcs.size());
            out.Set("crcs", crcs);
            return out;
        });
}

}  // namespace llmfleet_addon

namespace llmfleet_addon {

// kvScatter(src, dst, runs) -> Promise<number>: runs (srcOffset, dstOffset, length) of src copied
// into dst on a worker thread; resolves with src's CRC-32C. A KV store load's raw block placed into
// the state it assembles, off the event loop, checked on the way (the manifest names the CRC).
Napi::Value KvScatter(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const char * usage = "kvScatter(src: Uint8Array, dst: Uint8Array, runs: Float64Array)";
    if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() ||
        info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array || info[2].As<Napi::TypedArray>().ElementLength() % 3 != 0) {
        Napi::TypeError::New(env, usage).ThrowAsJavaScriptException();
        return env.Undefined();
    }
    Napi::TypedArray src_ta = info[0].As<Napi::TypedArray>();
    Napi::TypedArray dst_ta = info[1].As<Napi::TypedArray>();
    const uint8_t * src = static_cast<const uint8_t *>(src_ta.ArrayBuffer().Data()) + src_ta.ByteOffset();
    uint8_t * dst = static_cast<uint8_t *>(dst_ta.ArrayBuffer().Data()) + dst_ta.ByteOffset();
    const size_t src_len = src_ta.ByteLength(), dst_len = dst_ta.ByteLength();
    std::vector<uint64_t> runs;
    if (!read_runs(env, info[2].As<Napi::Float64Array>().Data(), info[2].As<Napi::TypedArray>().ElementLength(), src_len, dst_len, "kvScatter", "destination", runs))
        return env.Undefined();
    // Both buffers stay alive while the worker reads and writes them (owner: a persistent reference).
    Napi::Array owner = Napi::Array::New(env, 2);
    owner.Set(0u, src_ta);
    owner.Set(1u, dst_ta);
    return queue<uint32_t>(
        env, owner,
        [src, dst, src_len, runs = std::move(runs)](std::string &) {
            const uint32_t crc = kvnet::crc32c(src, src_len);
            for (size_t i = 0; i < runs.size(); i += 3) std::memcpy(dst + runs[i + 1], src + runs[i], runs[i + 2]);
            return crc;
        },
        [](Napi::Env env, uint32_t & crc) -> Napi::Value { return Napi::Number::New(env, crc); });
}

}  // namespace llmfleet_addon
