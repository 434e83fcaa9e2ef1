// Helpers of the network KV hand-off (kv-stream.cpp): CRC-32C, host memory for a received state,
// and blocking socket I/O with transport errors named for JavaScript.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "ggml-backend.h"
#include "host-pool.h"

namespace llmfleet_addon::kvnet {

// The wire (kv-stream.h): magic, version, limits, receiver statuses.
constexpr uint32_t KVN_MAGIC = 0x4e4b464c;  // "LFKN"
constexpr uint32_t KVN_VERSION = 1;
// v2: one hand-off over several connections, each carrying one contiguous stripe (kv-stream.h).
constexpr uint32_t KVN_VERSION_STRIPED = 2;
constexpr uint32_t MAX_STRIPES = 16;
constexpr uint32_t MAX_ID = 256;
constexpr uint32_t MAX_CHUNK = 64u << 20;
// The longest reply message or hand-off header accepted.
constexpr uint32_t MAX_HEADER = 1 << 20;
enum Status : uint32_t { ST_OK = 0, ST_FULL = 1, ST_BAD = 2, ST_TOO_LARGE = 3, ST_EXISTS = 4 };

// CRC-32C (Castagnoli): SSE 4.2 where the CPU has it, else slicing-by-8.
uint32_t crc32c(const uint8_t * p, size_t n);
// The CRC-32C of A followed by B, from crc32c(A), crc32c(B) and B's length.
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t bytes_b);

// Host memory for a received state, from the pool (host-pool.h): page-locked when a GPU backend is
// present (the import is then a DMA), else page-aligned.
struct HostMem {
    uint8_t * data = nullptr;
    size_t size = 0;
    hostpool::Block block;

    bool pinned() const { return block.pinned != nullptr; }
    static bool alloc(size_t n, HostMem & out);
    void release();
};

// A transport failure: code is one of connect, timeout, closed, protocol.
struct NetError {
    std::string code, message;
};

void set_timeouts(int fd, int64_t ms);
// TCP_NODELAY and 8 MiB socket buffers.
void tune(int fd);
NetError io_error(const char * what);
bool send_iov(int fd, iovec * iov, int cnt, NetError & err);
bool send_all(int fd, const void * p, size_t n, NetError & err);
bool recv_all(int fd, void * p, size_t n, NetError & err);
// A status and a message (u32 status, u32 length, bytes).
bool send_reply(int fd, uint32_t status, const std::string & msg, NetError & err);
bool recv_reply(int fd, uint32_t & status, std::string & msg, NetError & err);
// A connected socket (blocking), or -1 with err set; the connect itself waits at most timeout_ms.
int connect_to(const std::string & host, int port, int64_t timeout_ms, NetError & err);

}  // namespace llmfleet_addon::kvnet
