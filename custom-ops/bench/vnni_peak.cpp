// Measured int8 multiply-add peak of this CPU, the denominator of "fraction of peak" in bench/RESULTS.md. Not a test.
// - AVX-512 VNNI (when the CPU has it): vpdpbusd (u8 x s8 -> s32, 64 multiply-adds per zmm).
// - AVX2 (every x86-64 CPU the kernels run on): vpmaddubsw (u8 x s8 -> pairs summed in s16, 32 multiply-adds per ymm)
//   followed by vpaddw into an int16 accumulator: the inner step of every AVX2 int8 kernel here (without VNNI a
//   product pair must be accumulated by a separate add), so no AVX2 int8 kernel of that form can exceed it.
// Both in register-only loops with 16 (VNNI) / 12 (AVX2) independent accumulators, more than latency x throughput, on 1
// and on N threads (default: 1 and 2). Clock: wall, or with QUANTC_BENCH_CLOCK=cpu the process's CPU time (all threads
// summed; the figure is then per CPU-second times the thread count, which a time-shared host does not inflate).
// A third line gives the fp32 FMA peak (vfmadd231ps ymm) for comparison. Usage: quantc_vnni_peak [threads...]
#include <immintrin.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "best_seconds.h"
#include "quantc/gemm.h"

namespace {

// Sixteen / twelve named accumulators (an array would live on the stack): the loops touch no memory.
#define QUANTC_ACC16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define QUANTC_ACC12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

__attribute__((target("avx512f,avx512vnni"))) int64_t spin_vnni(int64_t iters) {
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
#define QUANTC_DECL(i) __m512i acc##i = _mm512_set1_epi32(i);
  QUANTC_ACC16(QUANTC_DECL)
#undef QUANTC_DECL
  for (int64_t it = 0; it < iters; ++it) {
#define QUANTC_STEP(i) acc##i = _mm512_dpbusd_epi32(acc##i, a, b);
    QUANTC_ACC16(QUANTC_STEP)
#undef QUANTC_STEP
    // Keeps the compiler from folding the loop into a multiply (the values stay in registers).
#define QUANTC_KEEP(i) asm volatile("" : "+v"(acc##i));
    QUANTC_ACC16(QUANTC_KEEP)
#undef QUANTC_KEEP
  }
  __m512i s = _mm512_setzero_si512();
#define QUANTC_SUM(i) s = _mm512_add_epi32(s, acc##i);
  QUANTC_ACC16(QUANTC_SUM)
#undef QUANTC_SUM
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, s);
  int64_t total = 0;
  for (int32_t v : lanes) total += v;
  return total;
}

// AVX-VNNI: the VEX vpdpbusd on ymm (Intel cores since Alder Lake, Zen 5), 32 multiply-adds per instruction.
__attribute__((target("avx2,avxvnni"))) int64_t spin_avxvnni(int64_t iters) {
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
#define QUANTC_DECL(i) __m256i acc##i = _mm256_set1_epi32(i);
  QUANTC_ACC12(QUANTC_DECL)
#undef QUANTC_DECL
  for (int64_t it = 0; it < iters; ++it) {
#define QUANTC_STEP(i) acc##i = _mm256_dpbusd_avx_epi32(acc##i, a, b);
    QUANTC_ACC12(QUANTC_STEP)
#undef QUANTC_STEP
#define QUANTC_KEEP(i) asm volatile("" : "+x"(acc##i));
    QUANTC_ACC12(QUANTC_KEEP)
#undef QUANTC_KEEP
  }
  __m256i s = _mm256_setzero_si256();
#define QUANTC_SUM(i) s = _mm256_add_epi32(s, acc##i);
  QUANTC_ACC12(QUANTC_SUM)
#undef QUANTC_SUM
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  int64_t total = 0;
  for (int32_t v : lanes) total += v;
  return total;
}

__attribute__((target("avx2"))) int64_t spin_avx2(int64_t iters) {
  __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
  asm volatile("" : "+x"(a), "+x"(b));
#define QUANTC_DECL(i) __m256i acc##i = _mm256_set1_epi16(i);
  QUANTC_ACC12(QUANTC_DECL)
#undef QUANTC_DECL
  for (int64_t it = 0; it < iters; ++it) {
    // Each product reads its own accumulator (as the signed operand), so none is a common subexpression of another: twelve
    // independent chains of latency 5-6 cycles, more than enough to keep the multiplier busy.
#define QUANTC_STEP(i) acc##i = _mm256_add_epi16(acc##i, _mm256_maddubs_epi16(a, acc##i));
    QUANTC_ACC12(QUANTC_STEP)
#undef QUANTC_STEP
#define QUANTC_KEEP(i) asm volatile("" : "+x"(acc##i));
    QUANTC_ACC12(QUANTC_KEEP)
#undef QUANTC_KEEP
  }
  b = _mm256_add_epi8(b, a);
  __m256i s = b;
#define QUANTC_SUM(i) s = _mm256_add_epi16(s, acc##i);
  QUANTC_ACC12(QUANTC_SUM)
#undef QUANTC_SUM
  alignas(32) int16_t lanes[16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  int64_t total = 0;
  for (int16_t v : lanes) total += v;
  return total;
}

// For comparison, the float32 FMA peak the fp32 model's GEMMs (ONNX Runtime's MLAS) work against: vfmadd231ps ymm, 8
// multiply-adds per instruction, 12 independent accumulators.
__attribute__((target("avx2,fma"))) int64_t spin_fma(int64_t iters) {
  __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
  asm volatile("" : "+x"(a), "+x"(b));
#define QUANTC_DECL(i) __m256 acc##i = _mm256_set1_ps(static_cast<float>(i));
  QUANTC_ACC12(QUANTC_DECL)
#undef QUANTC_DECL
  for (int64_t it = 0; it < iters; ++it) {
#define QUANTC_STEP(i) acc##i = _mm256_fmadd_ps(acc##i, a, b);
    QUANTC_ACC12(QUANTC_STEP)
#undef QUANTC_STEP
#define QUANTC_KEEP(i) asm volatile("" : "+x"(acc##i));
    QUANTC_ACC12(QUANTC_KEEP)
#undef QUANTC_KEEP
  }
  __m256 s = a;
#define QUANTC_SUM(i) s = _mm256_add_ps(s, acc##i);
  QUANTC_ACC12(QUANTC_SUM)
#undef QUANTC_SUM
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  return static_cast<int64_t>(lanes[0] + lanes[7]);
}

// Giga int8 ops per second (a multiply-add counts 2) over `threads` threads, best of `reps`.
double measure(int64_t (*spin)(int64_t), int64_t macs_per_iter, int threads, int64_t iters, int reps) {
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    std::vector<std::thread> pool;
    std::vector<int64_t> sink(threads);
    const double t0 = quantc_bench::now_seconds();
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { sink[t] = spin(iters); });
    for (auto& th : pool) th.join();
    double s = quantc_bench::now_seconds() - t0;
    if (quantc_bench::cpu_clock()) s /= threads;  // CPU seconds of all threads: per thread as if each had a core
    int64_t check = 0;
    for (auto v : sink) check += v;
    if (check == 42) std::printf(" ");  // uses the results
    double gops = static_cast<double>(threads) * static_cast<double>(iters) * static_cast<double>(macs_per_iter) * 2 / s / 1e9;
    if (gops > best) best = gops;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> counts;
  for (int i = 1; i < argc; ++i) {
    int t = std::atoi(argv[i]);
    if (t < 1 || t > 1024) { std::fprintf(stderr, "usage: quantc_vnni_peak [threads 1..1024 ...]\n"); return 2; }
    counts.push_back(t);
  }
  if (counts.empty()) counts = {1, 2};
  quantc_bench::print_cpu(5);
  if (!__builtin_cpu_supports("avx2")) {
    std::fprintf(stderr, "this CPU has no AVX2\n");
    return 2;
  }
  const bool vnni = __builtin_cpu_supports("avx512vnni");
  if (!vnni) std::printf("vpdpbusd skipped: this CPU has no AVX-512 VNNI\n\n");
  std::printf("| threads | instruction | GOPS (best of 5) | per thread |\n|---|---|---|---|\n");
  for (int t : counts) {
    if (vnni) {
      const double g = measure(spin_vnni, 16 * 64, t, 50'000'000, 5);  // 800 M vpdpbusd per thread, ~0.2-0.5 s
      std::printf("| %d | vpdpbusd zmm | %.1f | %.1f |\n", t, g, g / t);
    }
    if (quantc::avx_vnni_present()) {
      const double g = measure(spin_avxvnni, 12 * 32, t, 25'000'000, 5);  // 300 M vpdpbusd ymm per thread
      std::printf("| %d | vpdpbusd ymm (AVX-VNNI) | %.1f | %.1f |\n", t, g, g / t);
    }
    const double g = measure(spin_avx2, 12 * 32, t, 25'000'000, 5);  // 300 M vpmaddubsw + vpaddw per thread
    std::printf("| %d | vpmaddubsw + vpaddw ymm (AVX2) | %.1f | %.1f |\n", t, g, g / t);
    const double f = measure(spin_fma, 12 * 8, t, 25'000'000, 5);
    std::printf("| %d | vfmadd231ps ymm (fp32 GFLOPS, for comparison) | %.1f | %.1f |\n", t, f, f / t);
  }
  return 0;
}
