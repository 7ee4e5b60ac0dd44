// Measured int8 VNNI peak of this CPU: vpdpbusd (u8 x s8 -> s32, 64 multiply-adds per zmm) in a
// register-only loop, 16 independent accumulators (more than latency x throughput), on 1 and on
// N threads (default: 1 and 2). Not a test; the figure goes into bench/RESULTS.md as the
// denominator of "fraction of VNNI peak". Usage: quantc_vnni_peak [threads...]
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

constexpr int kAcc = 16;

// Sixteen named accumulators (an array would live on the stack): the loop touches no memory.
#define QUANTC_ACC(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

__attribute__((target("avx512f,avx512vnni"))) int64_t spin(int64_t iters) {
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
#define QUANTC_DECL(i) __m512i acc##i = _mm512_set1_epi32(i);
  QUANTC_ACC(QUANTC_DECL)
  for (int64_t it = 0; it < iters; ++it) {
#define QUANTC_STEP(i) acc##i = _mm512_dpbusd_epi32(acc##i, a, b);
    QUANTC_ACC(QUANTC_STEP)
    // Keeps the compiler from folding the loop into a multiply (the values stay in registers).
#define QUANTC_KEEP(i) asm volatile("" : "+v"(acc##i));
    QUANTC_ACC(QUANTC_KEEP)
  }
  __m512i s = _mm512_setzero_si512();
#define QUANTC_SUM(i) s = _mm512_add_epi32(s, acc##i);
  QUANTC_ACC(QUANTC_SUM)
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, s);
  int64_t total = 0;
  for (int32_t v : lanes) total += v;
  return total;
}

// Giga int8 ops per second (a multiply-add counts 2) over `threads` threads, best of `reps`.
double measure(int threads, int64_t iters, int reps) {
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    std::vector<std::thread> pool;
    std::vector<int64_t> sink(threads);
    auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { sink[t] = spin(iters); });
    for (auto& th : pool) th.join();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int64_t check = 0;
    for (auto v : sink) check += v;
    if (check == 42) std::printf(" ");  // uses the results
    double gops = static_cast<double>(threads) * iters * kAcc * 64 * 2 / s / 1e9;
    if (gops > best) best = gops;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  if (!__builtin_cpu_supports("avx512vnni")) {
    std::fprintf(stderr, "this CPU has no AVX-512 VNNI\n");
    return 2;
  }
  std::vector<int> counts;
  for (int i = 1; i < argc; ++i) {
    int t = std::atoi(argv[i]);
    if (t < 1 || t > 1024) { std::fprintf(stderr, "usage: quantc_vnni_peak [threads 1..1024 ...]\n"); return 2; }
    counts.push_back(t);
  }
  if (counts.empty()) counts = {1, 2};
  const int64_t iters = 50'000'000;  // 800 M vpdpbusd per thread, ~0.2-0.5 s
  std::printf("| threads | vpdpbusd zmm int8 GOPS (best of 5) | per thread |\n|---|---|---|\n");
  for (int t : counts) {
    double g = measure(t, iters, 5);
    std::printf("| %d | %.1f | %.1f |\n", t, g, g / t);
  }
  return 0;
}
