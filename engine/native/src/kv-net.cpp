// Helpers of the network KV hand-off: see kv-net.h.
#include "kv-net.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace llmfleet_addon::kvnet {

namespace {

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

}  // namespace

uint32_t crc32c(const uint8_t * p, size_t n) {
    std::call_once(g_crc_once, crc_init);
#if defined(__x86_64__)
    static const bool hw = __builtin_cpu_supports("sse4.2");
    if (hw) return crc32c_hw(0, p, n);
#endif
    return crc32c_sw(0, p, n);
}

// ---- host memory for a received state: from the pool (page-locked when a GPU backend is present) ----

bool HostMem::alloc(size_t n, HostMem & out) {
    hostpool::Block b = hostpool::acquire(n);
    if (!b.data) return false;
    out.data = b.data;
    out.size = n;
    out.block = b;
    return true;
}

void HostMem::release() {
    hostpool::release(block);
    data = nullptr;
    size = 0;
}

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

}  // namespace llmfleet_addon::kvnet
