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
#pragma once

#include <napi.h>

namespace llmfleet_addon {

// kvSend, kvChecksum, kvListen, kvTake, kvStats, kvClose on `exports` (see kv-stream.cpp).
void InitKvStream(Napi::Env env, Napi::Object exports);

// The sending side (kv-send.cpp).
Napi::Value KvSend(const Napi::CallbackInfo & info);
Napi::Value KvChecksum(const Napi::CallbackInfo & info);

}  // namespace llmfleet_addon
