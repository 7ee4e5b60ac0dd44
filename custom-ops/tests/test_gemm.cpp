#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "quantc/gemm.h"

namespace {

std::vector<int8_t> random_int8(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(-128, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}

TEST(MatMulInt8, EveryPathIsExact) {
  std::mt19937 rng(3);
  const quantc::Isa paths[] = {quantc::Isa::Reference, quantc::Isa::Avx2, quantc::Isa::Avx512Vnni};
  for (auto [M, N, K] : std::vector<std::tuple<int, int, int>>{{1, 1, 1}, {3, 5, 7}, {4, 8, 64}, {17, 33, 129}, {64, 64, 4096}, {2, 11, 200}}) {
    auto a = random_int8(M * K, rng), b = random_int8(N * K, rng);
    a[0] = -128;  // extremes: the VNNI offset trick must stay exact
    b[0] = -128;
    std::vector<int32_t> ref(M * N);
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        int32_t s = 0;
        for (int k = 0; k < K; ++k) s += a[m * K + k] * b[n * K + k];
        ref[m * N + n] = s;
      }
    for (auto isa : paths) {
      if (static_cast<int>(isa) > static_cast<int>(quantc::best_isa())) continue;
      std::vector<int32_t> acc(M * N);
      quantc::matmul_int8_accumulate(a.data(), b.data(), M, N, K, acc.data(), isa);
      ASSERT_EQ(acc, ref) << quantc::isa_name(isa) << " M=" << M << " N=" << N << " K=" << K;
    }
  }
}

TEST(MatMulInt8, DequantizesWithScalesAndBias) {
  std::vector<int8_t> a = {1, 2, 3, -4}, b = {1, 1, -1, 2, 0, 0};  // A [2,2], B [3,2]
  std::vector<float> bs = {0.5f, 0.25f, 1.0f}, bias = {1, 2, 3}, y(6);
  quantc::matmul_int8(a.data(), b.data(), 2, 3, 2, 2.0f, bs.data(), bias.data(), y.data(), quantc::best_isa());
  EXPECT_EQ(y, (std::vector<float>{1 + 3 * 1.0f, 2 + 3 * 0.5f, 3, 1 + (-1) * 1.0f, 2 + (-11) * 0.5f, 3}));
}

}  // namespace
