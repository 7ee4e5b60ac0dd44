#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "quantc/swiglu.h"

namespace {

// silu(g) * u in double: what every path must match to float rounding (the vector paths' e^x is a polynomial with a relative
// error of about 1e-7, clamped below -87.3: there they give about g·e^-87.3 in place of a smaller value, under 1e-35).
double want(float g, float u) { return static_cast<double>(g) / (1.0 + std::exp(-static_cast<double>(g))) * u; }

// Rows of [gate | up] (gate = 0) or [up | gate] (gate = 1): normal values, large ones on both sides of exp's range, zeros.
std::vector<float> rows(int64_t M, int64_t F, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, 3.f);
  std::vector<float> x(static_cast<size_t>(M * 2 * F));
  for (auto& v : x) v = n(rng);
  const float edge[] = {0.f, -0.f, 30.f, -30.f, 88.5f, -88.5f, 100.f, -100.f, 1e-30f, -1e-30f};
  for (size_t i = 0; i < std::size(edge) && i < x.size(); ++i) x[i * 7 % x.size()] = edge[i];
  return x;
}

TEST(SwiGlu, EveryPathMatchesTheDoubleFormulaOnBothGateHalves) {
  for (int64_t F : {1, 7, 8, 15, 16, 17, 31, 33, 352, 1408}) {
    for (int gate : {0, 1}) {
      const int64_t M = F > 300 ? 3 : 5;
      const auto x = rows(M, F, static_cast<unsigned>(F * 2 + gate));
      for (auto isa : {quantc::Isa::Reference, quantc::Isa::Avx2, quantc::Isa::Avx512Vnni}) {
        if (static_cast<int>(isa) > static_cast<int>(quantc::best_isa())) continue;
        std::vector<float> y(static_cast<size_t>(M * F), std::numeric_limits<float>::quiet_NaN());  // poisoned
        quantc::swiglu(x.data(), M, F, gate, y.data(), isa);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t f = 0; f < F; ++f) {
            const float g = x[static_cast<size_t>(m * 2 * F + gate * F + f)], u = x[static_cast<size_t>(m * 2 * F + (1 - gate) * F + f)];
            const double w = want(g, u), got = y[static_cast<size_t>(m * F + f)];
            ASSERT_LE(std::abs(got - w), 2e-6 * std::abs(w) + 1e-30)
                << quantc::isa_name(isa) << " F " << F << " gate " << gate << " m " << m << " f " << f << " g " << g << " u " << u;
          }
      }
    }
  }
}

TEST(SwiGlu, NanPropagatesAndLargeRowCountsSplitOverThreads) {
  const int64_t M = 600, F = 64;  // enough work for parallel_for to split the rows
  auto x = rows(M, F, 9);
  x[5] = std::numeric_limits<float>::quiet_NaN();  // row 0's gate, column 5
  for (auto isa : {quantc::Isa::Reference, quantc::Isa::Avx2, quantc::Isa::Avx512Vnni}) {
    if (static_cast<int>(isa) > static_cast<int>(quantc::best_isa())) continue;
    std::vector<float> y(static_cast<size_t>(M * F), 12345.f);
    quantc::swiglu(x.data(), M, F, 0, y.data(), isa);
    EXPECT_TRUE(std::isnan(y[5])) << quantc::isa_name(isa);
    for (int64_t i = 0; i < M * F; ++i) {
      if (i == 5) continue;
      const int64_t m = i / F, f = i % F;
      const double w = want(x[static_cast<size_t>(m * 2 * F + f)], x[static_cast<size_t>(m * 2 * F + F + f)]);
      ASSERT_LE(std::abs(y[static_cast<size_t>(i)] - w), 2e-6 * std::abs(w) + 1e-30) << quantc::isa_name(isa) << " at " << i;
    }
  }
}

}  // namespace
