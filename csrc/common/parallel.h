// CPU threading for the ops: a fork-join parallel_for over [0, n) on std::threads.
// Deterministic by construction where it matters: callers give each index its own output
// slot, so results do not depend on the number of threads.
#pragma once

#include <cstdint>
#include <functional>

namespace dkd {

// Threads the ops may use: dkd_set_num_threads(), else $DKD_NUM_THREADS, else the hardware.
int num_threads();
void set_num_threads(int n);

// Calls fn(i) for every i in [0, n), dynamically load-balanced over up to num_threads()
// threads (fewer when n is small).  `grain` indices are handed out at a time.  The first
// exception thrown by fn is rethrown in the caller after all threads have stopped.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t)>& fn);

}  // namespace dkd
