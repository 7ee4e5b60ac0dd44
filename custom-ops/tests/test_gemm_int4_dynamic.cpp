// MatMulInt4Int8 with a float A quantized per token inside the op, and the row quantization it uses.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "quantc/gemm.h"
#include "quantc/quantize.h"

namespace {

bool runs_here(quantc::Isa isa) { return static_cast<int>(isa) <= static_cast<int>(quantc::best_isa()); }

// lower_w4a8's graph, written out in scalar code: s = max(max|x|, 1e-12) / 127, q = saturate(round_half_even(x / s)).
void plain_rows(const std::vector<float>& x, int64_t M, int64_t K, std::vector<int8_t>& q, std::vector<float>& s) {
  q.assign(static_cast<size_t>(M * K), 0);
  s.assign(static_cast<size_t>(M), 0.f);
  for (int64_t m = 0; m < M; ++m) {
    float mx = 0.f;
    for (int64_t k = 0; k < K; ++k) mx = std::max(mx, std::fabs(x[m * K + k]));
    s[m] = std::max(mx, 1e-12f) / 127.f;
    for (int64_t k = 0; k < K; ++k) {
      const float v = std::nearbyint(x[m * K + k] / s[m]);
      q[m * K + k] = static_cast<int8_t>(v > 127.f ? 127.f : v < -128.f ? -128.f : v);
    }
  }
}

// Rows of mixed magnitude: a zero row (the 1e-12 floor), a row whose maximum is negative, ties after the division.
std::vector<float> activations(int64_t M, int64_t K, std::mt19937& rng) {
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(M * K));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) x[m * K + k] = g(rng) * (m % 3 == 0 ? 40.f : 0.5f) + (k % 17 == 0 ? 3.f : 0.f);
  if (M > 1)
    for (int64_t k = 0; k < K; ++k) x[K + k] = 0.f;
  if (M > 2) x[2 * K + K - 1] = -1000.f;
  if (M > 3)
    for (int64_t k = 0; k < K; ++k) x[3 * K + k] = 0.5f * static_cast<float>(k % 255) - 63.5f;  // max 63.5: x / s hits .5
  return x;
}

TEST(QuantizeRowsInt8, EveryPathEqualsThePlainDefinition) {
  std::mt19937 rng(31);
  for (auto [M, K] : std::vector<std::pair<int64_t, int64_t>>{{1, 7}, {5, 33}, {4, 64}, {9, 512}, {6, 1408}}) {
    const auto x = activations(M, K, rng);
    std::vector<int8_t> want_q;
    std::vector<float> want_s;
    plain_rows(x, M, K, want_q, want_s);
    for (auto isa : {quantc::Isa::Reference, quantc::Isa::Avx2}) {
      if (!runs_here(isa)) continue;
      std::vector<int8_t> q(static_cast<size_t>(M * K), 99);
      std::vector<float> s(static_cast<size_t>(M), -1.f);
      quantc::quantize_rows_int8(x.data(), M, K, q.data(), s.data(), isa);
      ASSERT_EQ(s, want_s) << quantc::isa_name(isa) << " M=" << M << " K=" << K;
      ASSERT_EQ(q, want_q) << quantc::isa_name(isa) << " M=" << M << " K=" << K;
    }
  }
  // A NaN anywhere in the row (body or tail of the vector loop) makes the row's scale NaN on every path.
  for (int64_t at : {0, 15, 16, 39}) {
    std::vector<float> row(40, 1.f);
    row[at] = std::numeric_limits<float>::quiet_NaN();
    for (auto isa : {quantc::Isa::Reference, quantc::Isa::Avx2}) {
      if (!runs_here(isa)) continue;
      EXPECT_TRUE(std::isnan(quantc::row_scale_int8(row.data(), 40, isa))) << quantc::isa_name(isa) << " at " << at;
    }
  }
}

// Float A: the packed GEMM quantizes each row inside and equals the graph's arithmetic bit for bit — the reference
// int8 kernel on the plainly quantized rows (no bias), each output row times its scale, then + bias. Odd shapes,
// M = 1 (the decode tile) and remainders of the 4-row / 64-row tiles, N not a multiple of 16, K = 64 .. 4096,
// G = 32 / 64 / 128, with and without bias, A_scale not 1.
TEST(MatMulInt4Int8, FloatActivationsQuantizedInsideEqualTheGraphBitForBit) {
  std::mt19937 rng(37);
  std::uniform_int_distribution<int> d4(-8, 7);
  const std::vector<std::tuple<int, int, int, int>> shapes = {
      {1, 13, 64, 32}, {1, 70, 1408, 32}, {2, 33, 256, 64}, {4, 64, 4096, 128}, {5, 17, 640, 32}, {67, 50, 1408, 32}, {130, 96, 512, 64}};
  int ran = 0;
  for (auto [M, N, K, G] : shapes) {
    const auto x = activations(M, K, rng);
    std::vector<int8_t> w(static_cast<size_t>(N) * K), q;
    for (auto& v : w) v = static_cast<int8_t>(d4(rng));
    std::vector<uint8_t> chunked(static_cast<size_t>(N) * K / 2);
    quantc::pack_int4_chunked(w.data(), N, K, chunked.data());
    std::vector<float> ws(static_cast<size_t>(N) * (K / G)), bias(N), s;
    for (size_t i = 0; i < ws.size(); ++i) ws[i] = 0.002f + 0.0007f * static_cast<float>(i % 31);
    for (int n = 0; n < N; ++n) bias[n] = 0.25f * n - 3.0f;
    const quantc::PackedInt4 packed = quantc::pack_int4_gemm(chunked.data(), ws.data(), N, K, G);
    plain_rows(x, M, K, q, s);
    for (float a_scale : {1.0f, 0.75f}) {
      std::vector<float> raw(static_cast<size_t>(M) * N);
      quantc::matmul_int4_int8(q.data(), chunked.data(), M, N, K, G, a_scale, ws.data(), nullptr, raw.data(), quantc::Isa::Reference);
      for (bool with_bias : {true, false}) {
        std::vector<float> want(raw.size());
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < N; ++n) {
            const float scaled = raw[m * N + n] * s[m];
            want[m * N + n] = with_bias ? scaled + bias[n] : scaled;
          }
        for (auto isa : {quantc::Isa::Avx2, quantc::Isa::Avx512Vnni}) {
          if (!runs_here(isa)) continue;
          std::vector<float> y(want.size(), -7.0f);
          quantc::matmul_int4_f32_packed(x.data(), packed, M, a_scale, with_bias ? bias.data() : nullptr, y.data(), isa);
          ASSERT_EQ(y, want) << quantc::isa_name(isa) << " M=" << M << " N=" << N << " K=" << K << " G=" << G << " bias=" << with_bias;
          ++ran;
        }
      }
    }
  }
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU: the packed GEMM has no path to run";
  if (quantc::best_isa() == quantc::Isa::Avx2) std::printf("[ skipped  ] AVX-512 VNNI path: not supported by this CPU\n");
  EXPECT_GT(ran, 0);
}

// A NaN in one row of A gives NaN in that row of Y only; the other rows are the rows computed alone.
TEST(MatMulInt4Int8, FloatActivationsWithANaNSpoilOnlyTheirRow) {
  const int M = 3, N = 20, K = 128, G = 32;
  std::mt19937 rng(41);
  auto x = activations(M, K, rng);
  x[K + 5] = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint8_t> chunked(N * K / 2, 0x3A);
  std::vector<float> ws(N * (K / G), 0.01f);
  const quantc::PackedInt4 packed = quantc::pack_int4_gemm(chunked.data(), ws.data(), N, K, G);
  for (auto isa : {quantc::Isa::Avx2, quantc::Isa::Avx512Vnni}) {
    if (!runs_here(isa)) continue;
    std::vector<float> y(M * N), alone(N);
    quantc::matmul_int4_f32_packed(x.data(), packed, M, 1.f, nullptr, y.data(), isa);
    for (int n = 0; n < N; ++n) EXPECT_TRUE(std::isnan(y[N + n])) << quantc::isa_name(isa) << " n=" << n;
    quantc::matmul_int4_f32_packed(x.data() + 2 * K, packed, 1, 1.f, nullptr, alone.data(), isa);
    EXPECT_EQ(std::vector<float>(y.begin() + 2 * N, y.end()), alone) << quantc::isa_name(isa);
  }
}

}  // namespace
