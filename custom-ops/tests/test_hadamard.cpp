#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "quantc/hadamard.h"

namespace {

TEST(Hadamard, EveryOrderIsAHadamardMatrix) {
  for (int m : quantc::hadamard_orders()) {
    auto h = quantc::hadamard_matrix(m);
    ASSERT_EQ(h.size(), static_cast<size_t>(m * m)) << "order " << m;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < m; ++j) {
        ASSERT_TRUE(h[i * m + j] == 1 || h[i * m + j] == -1) << "order " << m;
        int dot = 0;
        for (int k = 0; k < m; ++k) dot += h[i * m + k] * h[j * m + k];
        ASSERT_EQ(dot, i == j ? m : 0) << "order " << m << " rows " << i << "," << j;
      }
  }
}

TEST(Hadamard, SplitsSizes) {
  int64_t p2;
  int m;
  ASSERT_TRUE(quantc::hadamard_split(4096, &p2, &m));
  EXPECT_EQ(p2, 4096);
  EXPECT_EQ(m, 1);
  ASSERT_TRUE(quantc::hadamard_split(13824, &p2, &m));  // LLaMA-13B MLP: 108 * 128
  EXPECT_EQ(m * p2, 13824);
  ASSERT_TRUE(quantc::hadamard_split(14336, &p2, &m));  // 28 * 512
  EXPECT_EQ(m * p2, 14336);
  ASSERT_TRUE(quantc::hadamard_split(11008, &p2, &m));  // LLaMA-7B MLP: 172 * 64
  EXPECT_EQ(m, 172);
  EXPECT_EQ(p2, 64);
  ASSERT_TRUE(quantc::hadamard_split(344, &p2, &m));  // tiny reference llama's MLP: 172 * 2
  EXPECT_EQ(m, 172);
  ASSERT_TRUE(quantc::hadamard_split(624, &p2, &m));  // 156 * 4
  EXPECT_EQ(m, 156);
  EXPECT_FALSE(quantc::hadamard_split(100, &p2, &m));
  EXPECT_FALSE(quantc::hadamard_split(0, &p2, &m));
}

TEST(Hadamard, FastTransformEqualsDenseReference) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist;
  for (int64_t n : {1, 2, 8, 64, 12, 24, 20, 80, 28, 36, 40, 44, 52, 104, 60, 108, 140, 280, 156, 312, 172, 344, 1376}) {
    const int64_t rows = 3;
    std::vector<float> x(rows * n), fast(rows * n), ref(rows * n);
    for (auto& v : x) v = dist(rng);
    quantc::hadamard_transform(x.data(), fast.data(), rows, n, true);
    quantc::hadamard_transform_reference(x.data(), ref.data(), rows, n, true);
    for (int64_t i = 0; i < rows * n; ++i) ASSERT_NEAR(fast[i], ref[i], 1e-4f * (1 + std::fabs(ref[i]))) << "n=" << n;
    // Normalised H is orthogonal: the norm is preserved.
    double nx = 0, ny = 0;
    for (int64_t i = 0; i < rows * n; ++i) { nx += x[i] * x[i]; ny += fast[i] * fast[i]; }
    ASSERT_NEAR(nx, ny, 1e-3 * nx) << "n=" << n;
  }
}

TEST(Hadamard, InPlaceWorks) {
  std::vector<float> x = {1, 2, 3, 4}, y(4);
  quantc::hadamard_transform(x.data(), y.data(), 1, 4, false);
  quantc::hadamard_transform(x.data(), x.data(), 1, 4, false);
  EXPECT_EQ(x, y);
  EXPECT_EQ(y, (std::vector<float>{10, -2, -4, 0}));
}

// The vectorised rows (AVX2: in-register butterflies for h = 1, 2, 4, the H_m mix with 8, 16 or 32 columns held across
// the sum) and the row-parallel transform give the scalar path's floats bit for bit: every 2^k up to 8192, every
// supported m times 2^k for k = 0 .. 6 (2^k < 8 stays scalar), unnormalised too, in place and out of place.
TEST(Hadamard, VectorAndParallelPathsEqualTheScalarPathBitForBit) {
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU: only the scalar path runs";
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.f, 3.f);
  std::vector<int64_t> sizes;
  for (int64_t p = 1; p <= 8192; p *= 2) sizes.push_back(p);
  for (int m : quantc::hadamard_orders())
    for (int64_t p = 1; p <= 64; p *= 2) sizes.push_back(m * p);
  for (int64_t n : sizes)
    for (bool normalize : {true, false}) {
      const int64_t rows = n >= 4096 ? 2 : 5;
      std::vector<float> x(rows * n), scalar(rows * n), vec(rows * n), par(rows * n);
      for (auto& v : x) v = dist(rng);
      quantc::hadamard_transform_rows(x.data(), scalar.data(), rows, n, normalize, quantc::Isa::Reference);
      quantc::hadamard_transform_rows(x.data(), vec.data(), rows, n, normalize, quantc::Isa::Avx2);
      ASSERT_EQ(vec, scalar) << "n=" << n << " normalize=" << normalize;
      if (quantc::best_isa() == quantc::Isa::Avx512Vnni) {  // the AVX-512 mix (fused multiply-adds by ±1)
        std::vector<float> wide(rows * n);
        quantc::hadamard_transform_rows(x.data(), wide.data(), rows, n, normalize, quantc::Isa::Avx512Vnni);
        ASSERT_EQ(wide, scalar) << "avx512: n=" << n << " normalize=" << normalize;
      }
      std::vector<float> inplace = x;
      quantc::hadamard_transform(inplace.data(), inplace.data(), rows, n, normalize);
      ASSERT_EQ(inplace, scalar) << "parallel, in place: n=" << n << " normalize=" << normalize;
    }
  // Enough rows for parallel_for to split them (more than 2^18 units of work).
  const int64_t rows = 700, n = 44 * 32;
  std::vector<float> x(rows * n), scalar(rows * n), par(rows * n);
  for (auto& v : x) v = dist(rng);
  quantc::hadamard_transform_rows(x.data(), scalar.data(), rows, n, true, quantc::Isa::Reference);
  quantc::hadamard_transform(x.data(), par.data(), rows, n, true);
  EXPECT_EQ(par, scalar);
}

TEST(Hadamard, UnsupportedSizeThrows) {
  std::vector<float> x(100);
  EXPECT_THROW(quantc::hadamard_transform(x.data(), x.data(), 1, 100, true), std::invalid_argument);
}

}  // namespace
