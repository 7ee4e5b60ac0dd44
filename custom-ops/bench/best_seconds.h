// The benches' timer: the best (shortest) of `repeats` runs of f, in seconds.
#pragma once

#include <algorithm>
#include <chrono>

namespace quantc_bench {

template <typename F>
double best_seconds(int repeats, F&& f) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace quantc_bench
