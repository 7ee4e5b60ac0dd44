#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "quantc/gemm_fp8.h"

namespace {

// Every finite e4m3fn value is an integer count of 2^-9 that converts back to itself.
TEST(Fp8E4M3Fn, EveryValueIsItsOwnRounding) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7F) == 0x7F) continue;  // NaN
    float v = quantc::fp8_e4m3fn_to_float(static_cast<uint8_t>(b));
    EXPECT_EQ(std::ldexp(static_cast<float>(quantc::fp8_e4m3fn_units(v)), -9), v) << "byte " << b;
  }
  EXPECT_EQ(quantc::fp8_e4m3fn_to_float(0x7E), 448.0f);
  EXPECT_TRUE(std::isnan(quantc::fp8_e4m3fn_to_float(0xFF)));
}

TEST(Fp8E4M3Fn, RoundsHalfToEvenAndSaturates) {
  EXPECT_EQ(quantc::fp8_e4m3fn_units(1.0625f), 512);          // halfway between 1 and 1.125: to 1 (even mantissa)
  EXPECT_EQ(quantc::fp8_e4m3fn_units(1.1875f), 640);          // halfway between 1.125 and 1.25: to 1.25
  EXPECT_EQ(quantc::fp8_e4m3fn_units(1000.0f), 229376);       // saturates to 448
  EXPECT_EQ(quantc::fp8_e4m3fn_units(-INFINITY), -229376);
  EXPECT_EQ(quantc::fp8_e4m3fn_units(std::ldexp(1.5f, -10)), 1);  // 0.75 * 2^-9: the nearest subnormal is 2^-9
  EXPECT_EQ(quantc::fp8_e4m3fn_units(std::ldexp(1.0f, -10)), 0);  // halfway between 0 and 2^-9: to 0
  EXPECT_EQ(quantc::fp8_e4m3fn_units(15.5f), 8192);           // 15.5 is halfway between 15 and 16: to 16 (carry into the binade)
}

// The unpacked reference: int64 sums of the unit products in k order.
std::vector<float> reference(const std::vector<float>& x, const std::vector<int8_t>& q, const std::vector<uint8_t>& scales, int64_t M, int64_t N,
                             int64_t K, int64_t G, int t_exp) {
  std::vector<float> y(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m) {
    float mx = 0;
    for (int64_t k = 0; k < K; ++k) mx = std::max(mx, std::fabs(x[m * K + k]));
    float s = std::max(mx, 1e-12f) / 448.0f;
    for (int64_t n = 0; n < N; ++n) {
      int64_t acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        float ws = quantc::fp8_e4m3fn_to_float(scales[n * (K / G) + k / G]);
        acc += static_cast<int64_t>(quantc::fp8_e4m3fn_units(x[m * K + k] / s)) * quantc::fp8_e4m3fn_units(q[n * K + k] * ws);
      }
      y[m * N + n] = std::ldexp(static_cast<float>(acc), -18) * (s * std::ldexp(1.0f, -t_exp));
    }
  }
  return y;
}

TEST(MatMulInt4Fp8, EqualsTheUnpackedReferenceBitForBit) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> qd(-8, 7), sd(0, 0x7E);
  std::normal_distribution<float> xd(0.0f, 1.0f);
  for (auto [M, N, K, G, T] : std::vector<std::tuple<int, int, int, int, int>>{
           {1, 1, 8, 8, 0}, {3, 5, 96, 32, 3}, {7, 33, 256, 128, 0}, {64, 96, 1024, 128, 7}, {2, 11, 250, 50, 14}}) {
    std::vector<int8_t> q(static_cast<size_t>(N * K));
    for (auto& v : q) v = static_cast<int8_t>(qd(rng));
    std::vector<uint8_t> packed(static_cast<size_t>(N * ((K + 1) / 2)), 0);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k)
        packed[n * ((K + 1) / 2) + k / 2] |= static_cast<uint8_t>((static_cast<uint8_t>(q[n * K + k]) & 0xF) << ((k & 1) * 4));
    std::vector<uint8_t> scales(static_cast<size_t>(N * (K / G)));
    for (auto& s : scales) s = static_cast<uint8_t>(sd(rng));
    std::vector<float> x(static_cast<size_t>(M * K));
    for (int i = 0; i < M * K; ++i) x[i] = xd(rng) * (i % 37 == 0 ? 300.0f : 1.0f);
    auto want = reference(x, q, scales, M, N, K, G, T);
    std::vector<float> y(static_cast<size_t>(M * N));
    quantc::matmul_int4_fp8(x.data(), packed.data(), scales.data(), M, N, K, G, T, y.data());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], want[i]) << "M=" << M << " N=" << N << " K=" << K << " at " << i;
  }
}

TEST(MatMulInt4Fp8, ARowWithANanGivesNan) {
  std::vector<float> x = {1.0f, NAN, 2.0f, 3.0f};
  std::vector<uint8_t> w = {0x11, 0x11}, s = {0x38};  // q = 1, scale 1
  std::vector<float> y(1);
  quantc::matmul_int4_fp8(x.data(), w.data(), s.data(), 1, 1, 4, 4, 0, y.data());
  EXPECT_TRUE(std::isnan(y[0]));
}

TEST(MatMulInt4Fp8, RejectsBadShapes) {
  std::vector<float> x(48), y(1);
  std::vector<uint8_t> w(24), s(2);
  EXPECT_THROW(quantc::matmul_int4_fp8(x.data(), w.data(), s.data(), 1, 1, 48, 32, 0, y.data()), std::invalid_argument);
  EXPECT_THROW(quantc::matmul_int4_fp8(x.data(), w.data(), s.data(), 1, 1, 48, 0, 0, y.data()), std::invalid_argument);
}

}  // namespace
