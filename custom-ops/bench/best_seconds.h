// The benches' timer: the best (shortest) of `repeats` runs of f, in seconds; and the CPU line they print first.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>

#include "quantc/gemm.h"

namespace quantc_bench {

// The clock: wall time by default; with QUANTC_BENCH_CLOCK=cpu the CPU time of the whole process (all its threads),
// which a time-shared host does not inflate (its caches are still shared), so "per CPU-second" figures stay comparable
// under load. Read once.
inline bool cpu_clock() {
  static const bool cpu = [] {
    const char* c = std::getenv("QUANTC_BENCH_CLOCK");
    return c != nullptr && std::string(c) == "cpu";
  }();
  return cpu;
}

inline double now_seconds() {
  if (!cpu_clock()) return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

template <typename F>
double best_seconds(int repeats, F&& f) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const double t0 = now_seconds();
    f();
    best = std::min(best, now_seconds() - t0);
  }
  return best;
}

// "CPU: <model name>, <threads>; avx2: yes/no, avx512_vnni: yes/no; best path: ...; best of N runs" and a blank line.
inline void print_cpu(int repeats) {
  std::string model = "unknown";
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  std::printf("CPU: %s, %u threads; avx2: %s, avx512_vnni: %s; best path: %s; best of %d runs; clock: %s\n\n", model.c_str(),
              std::thread::hardware_concurrency(), __builtin_cpu_supports("avx2") ? "yes" : "no",
              __builtin_cpu_supports("avx512vnni") ? "yes" : "no", quantc::isa_name(quantc::best_isa()), repeats,
              cpu_clock() ? "process CPU time (QUANTC_BENCH_CLOCK=cpu; all threads' seconds summed)" : "wall");
}

}  // namespace quantc_bench
