// Measured memory read bandwidth of this machine: the denominator of "fraction of memory bandwidth" for the decode
// GEMV (MatMulInt4Int8 at small M streams its packed weight once per call). Each thread sums its own slice of a buffer far
// larger than the last-level cache with 256-bit loads (four streams, four independent accumulators, so the loop is bound by
// the loads, not by the adds); the GB/s count the bytes read once per pass. Also the same read over a buffer that fits the
// last-level cache (what a small model's weights see when decode reads them step after step). Best of N passes, on
// 1 thread and on every hardware thread. Not a test.
// Usage: quantc_mem_bandwidth [repeats] [MiB of the large buffer, default 512] [KiB of the cached one, default 8192]
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "best_seconds.h"

namespace {

// Four streams at once (the slice's quarters, as the GEMV reads four weight panels side by side): more misses in flight than
// one sequential stream keeps, which is what it takes to reach DRAM bandwidth from one core.
__attribute__((target("avx2"))) uint64_t read_sum(const uint8_t* p, size_t bytes) {
  const size_t quarter = bytes / 4 / 64 * 64;
  const uint8_t* q[4] = {p, p + quarter, p + 2 * quarter, p + 3 * quarter};
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 64 <= quarter; i += 64) {
    s0 = _mm256_add_epi64(s0, _mm256_add_epi64(_mm256_load_si256(reinterpret_cast<const __m256i*>(q[0] + i)),
                                               _mm256_load_si256(reinterpret_cast<const __m256i*>(q[0] + i + 32))));
    s1 = _mm256_add_epi64(s1, _mm256_add_epi64(_mm256_load_si256(reinterpret_cast<const __m256i*>(q[1] + i)),
                                               _mm256_load_si256(reinterpret_cast<const __m256i*>(q[1] + i + 32))));
    s2 = _mm256_add_epi64(s2, _mm256_add_epi64(_mm256_load_si256(reinterpret_cast<const __m256i*>(q[2] + i)),
                                               _mm256_load_si256(reinterpret_cast<const __m256i*>(q[2] + i + 32))));
    s3 = _mm256_add_epi64(s3, _mm256_add_epi64(_mm256_load_si256(reinterpret_cast<const __m256i*>(q[3] + i)),
                                               _mm256_load_si256(reinterpret_cast<const __m256i*>(q[3] + i + 32))));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

// One pass over buf split across `threads` threads; the sums are kept so the reads cannot be dropped.
uint64_t pass(const uint8_t* buf, size_t bytes, unsigned threads) {
  const size_t slice = bytes / threads / 256 * 256;
  std::vector<uint64_t> sums(threads);
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back([&, t] { sums[t] = read_sum(buf + t * slice, slice); });
  sums[0] = read_sum(buf, slice);
  for (auto& th : pool) th.join();
  uint64_t s = 0;
  for (uint64_t v : sums) s += v;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 7;
  const size_t big = (argc > 2 ? std::max(1, std::atoi(argv[2])) : 512) * (size_t{1} << 20);
  const size_t small = (argc > 3 ? std::max(64, std::atoi(argv[3])) : 8192) * (size_t{1} << 10);
  quantc_bench::print_cpu(repeats);
  if (!__builtin_cpu_supports("avx2")) {
    std::printf("skipped: the read loop needs AVX2, which this CPU does not have\n");
    return 0;
  }
  const unsigned all = std::max(1u, std::thread::hardware_concurrency());
  std::printf("| buffer | threads | read GB/s |\n|---|---:|---:|\n");
  for (size_t bytes : {big, small}) {
    auto* buf = static_cast<uint8_t*>(std::aligned_alloc(64, bytes));
    for (size_t i = 0; i < bytes; ++i) buf[i] = static_cast<uint8_t>(i * 131u);  // touched: every page is mapped
    volatile uint64_t keep = 0;
    for (unsigned threads : {1u, all}) {
      if (threads == all && all == 1 && bytes == big) continue;
      keep = keep + pass(buf, bytes, threads);  // warm-up (and, for the small buffer, brings it into the cache)
      const double t = quantc_bench::best_seconds(repeats, [&] { keep = keep + pass(buf, bytes, threads); });
      const double read = static_cast<double>(bytes / threads / 256 * 256 * threads);
      std::printf("| %.1f MiB%s | %u | %.1f |\n", static_cast<double>(bytes) / (1 << 20), bytes == big ? " (DRAM)" : " (cache-resident)",
                  threads, read / t * 1e-9);
    }
    std::free(buf);
  }
  return 0;
}
