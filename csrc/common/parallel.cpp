#include "common/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace dkd {
namespace {

int default_threads() {
    if (const char* env = std::getenv("DKD_NUM_THREADS")) {
        int v = std::atoi(env);
        if (v > 0) return v;
    }
    unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

std::atomic<int> g_threads{0};

}  // namespace

int num_threads() {
    int t = g_threads.load(std::memory_order_relaxed);
    if (t <= 0) {
        t = default_threads();
        g_threads.store(t, std::memory_order_relaxed);
    }
    return t;
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : default_threads(), std::memory_order_relaxed); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t)>& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    int64_t chunks = (n + grain - 1) / grain;
    int threads = static_cast<int>(std::min<int64_t>(num_threads(), chunks));
    if (threads <= 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    std::atomic<int64_t> next{0};
    std::atomic<bool> stop{false};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&]() {
        try {
            for (;;) {
                if (stop.load(std::memory_order_relaxed)) return;
                int64_t start = next.fetch_add(grain);
                if (start >= n) return;
                int64_t end = std::min(n, start + grain);
                for (int64_t i = start; i < end; ++i) fn(i);
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            stop = true;
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace dkd
