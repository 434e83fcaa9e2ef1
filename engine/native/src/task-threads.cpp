// Kept threads for the KV hand-off's blocking work: see task-threads.h.
#include "task-threads.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace llmfleet_addon {

namespace {

constexpr auto IDLE_EXIT = std::chrono::seconds(60);

struct Pool {
    std::mutex mu;
    std::condition_variable wake;
    std::deque<std::function<void()>> queue;
    int threads = 0;
    int idle = 0;
    long started = 0;
};

// Never destroyed: detached threads may still wait on it while the process exits.
Pool & pool() {
    static Pool * p = new Pool();
    return *p;
}

void work(Pool & p) {
    std::unique_lock<std::mutex> lock(p.mu);
    for (;;) {
        p.idle++;
        const bool got = p.wake.wait_for(lock, IDLE_EXIT, [&] { return !p.queue.empty(); });
        p.idle--;
        if (!got) {
            p.threads--;
            return;
        }
        std::function<void()> task = std::move(p.queue.front());
        p.queue.pop_front();
        lock.unlock();
        task();
        task = nullptr;  // the task's captures go before the thread waits again
        lock.lock();
    }
}

}  // namespace

void run_task(std::function<void()> task) {
    Pool & p = pool();
    std::unique_lock<std::mutex> lock(p.mu);
    p.queue.push_back(std::move(task));
    // Every queued task needs a thread of its own (a send may wait on its stripes' tasks): start
    // one when the idle threads are fewer than the tasks waiting.
    if (p.idle < static_cast<int>(p.queue.size())) {
        p.threads++;
        p.started++;
        lock.unlock();
        std::thread([&p] { work(p); }).detach();
        return;
    }
    lock.unlock();
    p.wake.notify_one();
}

TaskThreadStats task_thread_stats() {
    Pool & p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    return {p.threads, p.idle, p.started};
}

}  // namespace llmfleet_addon
