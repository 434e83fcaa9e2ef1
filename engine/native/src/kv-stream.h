// The network hand-off of KV state (engine/pd/kv-transport.ts): a state moves between two
// processes over one TCP connection, in checksummed chunks, from and to native memory, on threads
// of its own: no JavaScript sees the payload, the engine's context is not held while it moves, and
// the receiving side stages it in page-locked memory (aligned host memory without a GPU) until the
// engine imports it. Module functions, not engine methods: a transfer touches no llama.cpp context.
//
// Wire ("LFKN" v1, little-endian), one hand-off per connection:
//   sender:   "LFKN" u32 version, u32 id length, u32 header length, u64 state bytes, id, header
//   receiver: u32 status, u32 message length, message      (status 0: go on; else refused, closes)
//   sender:   chunks: u32 length (> 0), u32 CRC-32C of the chunk, bytes; then u32 0
//   receiver: u32 status, u32 message length, message      (status 0: staged; message = its URL)
// Status: 0 ok, 1 full (retry later), 2 bad stream, 3 too large, 4 exists.
//
// "LFKN" v2 moves one hand-off over N connections (2..16) at once: one TCP stream over loopback
// stops at a few GB/s, bound by one core copying and checksumming, where a state of a 7B model is
// hundreds of MB. The state is cut into N contiguous stripes of whole chunks; each connection
// carries one:
//   sender:   "LFKN" u32 version (2), u32 id length, u32 header length, u64 state bytes,
//             u32 stripe index, u32 stripe count, u64 stripe offset, u64 stripe bytes, id, header
//   receiver: u32 status, u32 message length, message
//   sender:   that stripe's chunks as in v1, then u32 0
//   receiver: u32 status, u32 message length, message
// Stripe 0 opens the hand-off (its header is the hand-off's; the receiver reserves and allocates
// the whole state before it answers); the sender opens stripes 1..N-1 only after that answer, and
// they carry an empty header. A stripe's last answer says its bytes arrived; stripe 0's last answer
// comes when every stripe has arrived and the stripes tile the state (status 0: staged, message =
// its URL), or when any stripe failed or stalled (the whole hand-off is dropped). A decode pod that
// receives v2 says so at GET /internal/kv-transport (tcpStreams); a sender never sends v2 to one
// that does not.
#pragma once

#include <napi.h>

namespace llmfleet_addon {

// kvSend, kvChecksum, kvListen, kvTake, kvStats, kvClose, kvPause on `exports` (see kv-stream.cpp).
void InitKvStream(Napi::Env env, Napi::Object exports);

// The sending side (kv-send.cpp).
Napi::Value KvSend(const Napi::CallbackInfo & info);
Napi::Value KvChecksum(const Napi::CallbackInfo & info);
// kvGather(src, runs, bytes, blockEnds) -> Promise<{ data, crcs }>: runs of src copied into a new
// host-pool Buffer of `bytes` on a worker thread, and the CRC-32C of each block of it (kv-gather.cpp).
Napi::Value KvGather(const Napi::CallbackInfo & info);
// kvScatter(src, dst, runs) -> Promise<number>: runs of src copied into dst on a worker thread;
// resolves with src's CRC-32C (kv-gather.cpp).
Napi::Value KvScatter(const Napi::CallbackInfo & info);

}  // namespace llmfleet_addon
