// Threads for the KV hand-off's blocking work (a send, a received connection), kept and reused.
// A thread started per call measured 65-113 ms on the event loop now and then on a pod writing a
// state back (bench:kv-stall): creating a thread maps its stack, which waits for the process's
// address-space lock while other threads map or unmap the state's memory. run_task hands the task
// to an idle thread when one waits; only when none does is a thread started, and an idle thread
// ends after a minute without work, so the set follows the peak concurrency of the last minute.
#pragma once

#include <functional>

namespace llmfleet_addon {

// Runs task on a kept thread (never on the caller's). task must not throw.
void run_task(std::function<void()> task);

// Threads kept (idle or busy) and threads ever started: for tests and diagnostics.
struct TaskThreadStats {
    int threads;
    int idle;
    long started;
};
TaskThreadStats task_thread_stats();

}  // namespace llmfleet_addon
