#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include "quantc/hadamard.h"
#include "quantc/quantize.h"

namespace {

// Ties (x.5 both ways), saturation, signed zero and the edges of the int8 range, then random values.
std::vector<float> probe_values() {
  std::vector<float> v = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, 127.4f, 127.5f, 128.f, 1e9f, -127.5f, -128.f, -128.5f, -129.f, -1e9f, 0.f, -0.f,
                          0.49999997f, -0.49999997f};
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.f, 60.f);
  for (int i = 0; i < 1000; ++i) v.push_back(g(rng));
  return v;
}

TEST(QuantizeInt8, EveryPathRoundsHalfToEvenAndSaturates) {
  const auto x = probe_values();
  std::vector<int8_t> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double q = std::nearbyint(static_cast<double>(x[i]));  // scale 1: x / 1 is exact
    want[i] = static_cast<int8_t>(q > 127 ? 127 : q < -128 ? -128 : q);
  }
  EXPECT_EQ(want[0], 0); EXPECT_EQ(want[1], 2); EXPECT_EQ(want[2], 2); EXPECT_EQ(want[5], -2); EXPECT_EQ(want[8], 127); EXPECT_EQ(want[13], -128);
  for (auto isa : {quantc::Isa::Reference, quantc::Isa::Avx2}) {
    if (static_cast<int>(isa) > static_cast<int>(quantc::best_isa())) continue;
    for (size_t count : {x.size(), size_t{31}, size_t{33}, size_t{7}}) {  // the vector body and the tail
      std::vector<int8_t> y(count, 99);
      quantc::quantize_int8(x.data(), static_cast<int64_t>(count), 1.0f, y.data(), isa);
      ASSERT_EQ(y, std::vector<int8_t>(want.begin(), want.begin() + count)) << quantc::isa_name(isa) << " count " << count;
    }
  }
  // A scale that is not a power of two: the same bytes on every path.
  std::vector<int8_t> ref(x.size()), fast(x.size());
  quantc::quantize_int8(x.data(), static_cast<int64_t>(x.size()), 0.37f, ref.data(), quantc::Isa::Reference);
  quantc::quantize_int8(x.data(), static_cast<int64_t>(x.size()), 0.37f, fast.data(), quantc::best_isa());
  EXPECT_EQ(ref, fast);
}

TEST(HadamardQuantizeInt8, EqualsTheTransformThenTheQuantization) {
  std::mt19937 rng(9);
  std::normal_distribution<float> g(0.f, 3.f);
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{{1, 8}, {37, 64}, {130, 1024}, {5, 12 * 16}, {300, 256}}) {
    std::vector<float> x(rows * n), t(rows * n);
    for (auto& e : x) e = g(rng);
    quantc::hadamard_transform(x.data(), t.data(), rows, n, true);
    std::vector<int8_t> want(rows * n), got(rows * n, 99);
    quantc::quantize_int8(t.data(), rows * n, 0.05f, want.data(), quantc::Isa::Reference);
    quantc::hadamard_quantize_int8(x.data(), got.data(), rows, n, 0.05f);
    ASSERT_EQ(got, want) << rows << " x " << n;
  }
  std::vector<float> x(14);
  std::vector<int8_t> y(14);
  EXPECT_THROW(quantc::hadamard_quantize_int8(x.data(), y.data(), 1, 14, 1.f), std::invalid_argument);
}

// MatMulInt8's float-A kernel quantizes with quantize_int8_parallel: blocks over threads, the same bytes as one call.
TEST(QuantizeInt8, ParallelBlocksEqualOneCall) {
  const auto probe = probe_values();
  for (int64_t count : {1, 31, 16384, 16385, 100003}) {
    std::vector<float> x(static_cast<size_t>(count));
    for (size_t i = 0; i < x.size(); ++i) x[i] = probe[i % probe.size()] * (i % 3 == 0 ? 1.0f : 0.37f);
    std::vector<int8_t> want(x.size()), got(x.size(), 99);
    quantc::quantize_int8(x.data(), count, 0.73f, want.data(), quantc::Isa::Reference);
    quantc::quantize_int8_parallel(x.data(), count, 0.73f, got.data());
    ASSERT_EQ(got, want) << "count " << count;
  }
}

}  // namespace
