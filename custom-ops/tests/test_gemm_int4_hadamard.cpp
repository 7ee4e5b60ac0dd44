// MatMulInt4Int8 with QuaRot's online Hadamard folded in (hadamard=1): each float row of A transformed, then quantized per
// token, must equal ai.quantc.Hadamard (hadamard_transform) followed by the op on its output, bit for bit.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "quantc/gemm.h"
#include "quantc/hadamard.h"

namespace {

bool runs_here(quantc::Isa isa) { return static_cast<int>(isa) <= static_cast<int>(quantc::best_isa()); }

// K = 2^k * m for m = 1 (64, 4096), 12 (192), 20 (640) and 44 (1408: the small llama's down_proj); M = 1 (GEMV), 3, 17 and 40
// (more rows than one transform block of 16, and a row split over threads); N not a multiple of 16; G = 32 / 64 / 128.
TEST(MatMulInt4Int8, HadamardInsideEqualsTheHadamardOpThenTheOpBitForBit) {
  std::mt19937 rng(41);
  std::uniform_int_distribution<int> d4(-8, 7);
  std::normal_distribution<float> g(0.f, 1.f);
  const std::vector<std::tuple<int, int, int, int>> shapes = {{1, 13, 64, 32},   {3, 33, 192, 64},  {17, 50, 640, 32},
                                                              {1, 70, 1408, 32}, {40, 17, 1408, 32}, {2, 16, 4096, 128}};
  int ran = 0;
  for (auto [M, N, K, G] : shapes) {
    std::vector<float> x(static_cast<size_t>(M) * K);
    for (size_t i = 0; i < x.size(); ++i) x[i] = g(rng) * (i % 97 == 0 ? 30.f : 1.f);  // a few outliers, as R4 sees
    std::vector<int8_t> w(static_cast<size_t>(N) * K);
    for (auto& v : w) v = static_cast<int8_t>(d4(rng));
    std::vector<uint8_t> chunked(static_cast<size_t>(N) * K / 2);
    quantc::pack_int4_chunked(w.data(), N, K, chunked.data());
    std::vector<float> ws(static_cast<size_t>(N) * (K / G)), bias(N);
    for (size_t i = 0; i < ws.size(); ++i) ws[i] = 0.002f + 0.0009f * static_cast<float>(i % 23);
    for (int n = 0; n < N; ++n) bias[n] = 0.5f * n - 2.0f;
    const quantc::PackedInt4 packed = quantc::pack_int4_gemm(chunked.data(), ws.data(), N, K, G);
    for (bool normalize : {false, true}) {
      std::vector<float> rotated(x.size());
      quantc::hadamard_transform(x.data(), rotated.data(), M, K, normalize);  // what the separate Hadamard node computes
      const auto mode = normalize ? quantc::RowHadamard::Normalized : quantc::RowHadamard::Unnormalized;
      for (auto isa : {quantc::Isa::Avx2, quantc::Isa::Avx512Vnni}) {
        if (!runs_here(isa)) continue;
        std::vector<float> want(static_cast<size_t>(M) * N), y(want.size(), -3.0f);
        quantc::matmul_int4_f32_packed(rotated.data(), packed, M, 1.0f, bias.data(), want.data(), isa);
        quantc::matmul_int4_f32_packed(x.data(), packed, M, 1.0f, bias.data(), y.data(), isa, mode);
        ASSERT_EQ(y, want) << quantc::isa_name(isa) << " M=" << M << " N=" << N << " K=" << K << " normalize=" << normalize;
        std::vector<float> plain(want.size());  // and the transform is not a no-op: the untransformed rows give other outputs
        quantc::matmul_int4_f32_packed(x.data(), packed, M, 1.0f, bias.data(), plain.data(), isa);
        EXPECT_NE(plain, want);
        ++ran;
      }
    }
  }
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU: the packed GEMM has no path to run";
  if (quantc::best_isa() == quantc::Isa::Avx2) std::printf("[ skipped  ] AVX-512 VNNI path: not supported by this CPU\n");
  EXPECT_GT(ran, 0);
}

TEST(MatMulInt4Int8, HadamardInsideRejectsAKWithoutAHadamardOrder) {
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU: the packed GEMM has no path to run";
  const int N = 2, K = 1088;  // 17 * 64: a multiple of 64, but 2^k * m for no supported m
  std::vector<uint8_t> w(static_cast<size_t>(N) * K / 2, 0x11);
  std::vector<float> s(static_cast<size_t>(N) * (K / 32), 0.01f), x(K, 1.0f), y(N);
  const quantc::PackedInt4 p = quantc::pack_int4_gemm(w.data(), s.data(), N, K, 32);
  EXPECT_THROW(quantc::matmul_int4_f32_packed(x.data(), p, 1, 1.f, nullptr, y.data(), quantc::best_isa(), quantc::RowHadamard::Normalized),
               std::invalid_argument);
  EXPECT_NO_THROW(quantc::matmul_int4_f32_packed(x.data(), p, 1, 1.f, nullptr, y.data(), quantc::best_isa()));
}

}  // namespace
