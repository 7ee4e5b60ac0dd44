// Throughput of MatMulInt4Fp8's CPU reference kernel next to MatMulInt4Int8 on the same shapes (both on the threads their
// parallel_for starts). Not a test and no speed goal: FP8 speed comes with the GPU kernels.
// MatMulInt4Int8 takes activations already quantized to int8 (one scale); MatMulInt4Fp8 quantizes its float activations per
// token inside, and both dequantize their int4 weights per call. Usage: quantc_int4_fp8_bench [repeats]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <tuple>
#include <vector>

#include "best_seconds.h"
#include "quantc/gemm.h"
#include "quantc/gemm_fp8.h"

using quantc_bench::best_seconds;

int main(int argc, char** argv) {
  int repeats = argc > 1 ? std::atoi(argv[1]) : 5;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> qd(-8, 7), ad(-127, 127), sd(0x20, 0x50);
  std::normal_distribution<float> xd(0.0f, 1.0f);
  std::printf("| M | N | K | MatMulInt4Int8 GOP/s (%s) | MatMulInt4Fp8 GOP/s | ratio |\n|---:|---:|---:|---:|---:|---:|\n",
              quantc::isa_name(quantc::best_isa()));
  for (auto [M, N, K] : std::vector<std::tuple<int, int, int>>{{1, 4096, 4096}, {16, 4096, 4096}, {128, 4096, 4096}, {128, 352, 128},
                                                              {128, 128, 320}}) {
    const int G = 128 <= K && K % 128 == 0 ? 128 : 32;
    std::vector<int8_t> q(static_cast<size_t>(N) * K), a(static_cast<size_t>(M) * K);
    for (auto& v : q) v = static_cast<int8_t>(qd(rng));
    for (auto& v : a) v = static_cast<int8_t>(ad(rng));
    std::vector<float> x(static_cast<size_t>(M) * K), y(static_cast<size_t>(M) * N), fs(static_cast<size_t>(N) * (K / G), 0.01f);
    for (auto& v : x) v = xd(rng);
    const size_t half = static_cast<size_t>(N) * K / 2;
    std::vector<uint8_t> chunked(half), pairs(half, 0), s8(static_cast<size_t>(N) * (K / G));
    quantc::pack_int4_chunked(q.data(), N, K, chunked.data());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k)
        pairs[n * K / 2 + k / 2] |= static_cast<uint8_t>((static_cast<uint8_t>(q[n * K + k]) & 0xF) << ((k & 1) * 4));
    for (auto& v : s8) v = static_cast<uint8_t>(sd(rng));
    double ops = 2.0 * M * N * K;
    double t8 = best_seconds(repeats, [&] {
      quantc::matmul_int4_int8(a.data(), chunked.data(), M, N, K, G, 0.02f, fs.data(), nullptr, y.data(), quantc::best_isa());
    });
    double tf = best_seconds(repeats, [&] { quantc::matmul_int4_fp8(x.data(), pairs.data(), s8.data(), M, N, K, G, 3, y.data()); });
    std::printf("| %d | %d | %d | %.2f | %.2f | %.2f |\n", M, N, K, ops / t8 * 1e-9, ops / tf * 1e-9, t8 / tf);
  }
  return 0;
}
