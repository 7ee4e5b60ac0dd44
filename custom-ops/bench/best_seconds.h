// The benches' timer: the best (shortest) of `repeats` runs of f, in seconds; and the CPU line they print first.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "quantc/gemm.h"

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

// "CPU: <model name>, <threads>; avx2: yes/no, avx512_vnni: yes/no; best path: ...; best of N runs" and a blank line.
inline void print_cpu(int repeats) {
  std::string model = "unknown";
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  std::printf("CPU: %s, %u threads; avx2: %s, avx512_vnni: %s; best path: %s; best of %d runs\n\n", model.c_str(),
              std::thread::hardware_concurrency(), __builtin_cpu_supports("avx2") ? "yes" : "no",
              __builtin_cpu_supports("avx512vnni") ? "yes" : "no", quantc::isa_name(quantc::best_isa()), repeats);
}

}  // namespace quantc_bench
