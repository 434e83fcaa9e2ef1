// A small fork-join pool: run(n, fn) calls fn(0..n-1) on the pool's workers and the calling
// thread, and returns when every call has. The engine uses it for greedy sampling of many
// sequences at once (each an argmax over the vocabulary), which would otherwise leave the GPU
// idle for a millisecond or more a step at 64 sequences and a 32K vocabulary; the KV decoder
// (kvcodec-decode.cpp) keeps one per calling thread, so a load's decode calls start no threads.
// fn must not throw (a worker has no one to hand an exception to); run is for one caller at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace llmfleet {

class ForkJoin {
public:
    explicit ForkJoin(int32_t workers) {
        for (int32_t i = 0; i < workers; i++) threads_.emplace_back([this] { work(); });
    }

    ~ForkJoin() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread & t : threads_) t.join();
    }

    int32_t workers() const { return static_cast<int32_t>(threads_.size()); }

    ForkJoin(const ForkJoin &) = delete;
    ForkJoin & operator=(const ForkJoin &) = delete;

    void run(int32_t n, const std::function<void(int32_t)> & fn) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            fn_ = &fn;
            n_ = n;
            next_.store(0);
            busy_ = static_cast<int32_t>(threads_.size());
            generation_++;
        }
        wake_.notify_all();
        drain(fn, n);
        std::unique_lock<std::mutex> lock(mu_);
        done_.wait(lock, [this] { return busy_ == 0; });
        fn_ = nullptr;
    }

private:
    void drain(const std::function<void(int32_t)> & fn, int32_t n) {
        for (int32_t i = next_.fetch_add(1); i < n; i = next_.fetch_add(1)) fn(i);
    }

    void work() {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mu_);
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            const std::function<void(int32_t)> * fn = fn_;
            const int32_t n = n_;
            lock.unlock();
            drain(*fn, n);
            lock.lock();
            if (--busy_ == 0) done_.notify_one();
        }
    }

    std::mutex mu_;
    std::condition_variable wake_;
    std::condition_variable done_;
    const std::function<void(int32_t)> * fn_ = nullptr;
    int32_t n_ = 0;
    std::atomic<int32_t> next_{0};
    int32_t busy_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace llmfleet
