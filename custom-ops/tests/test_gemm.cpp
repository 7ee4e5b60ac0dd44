#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <random>
#include <thread>
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

namespace {

TEST(MatMulInt4Int8, EveryPathEqualsTheUnpackedReference) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> d4(-8, 7);
  for (auto [M, N, K, G] : std::vector<std::tuple<int, int, int, int>>{{1, 3, 64, 32}, {5, 7, 128, 64}, {2, 16, 256, 128}, {9, 5, 512, 32}}) {
    auto a = random_int8(M * K, rng);
    std::vector<int8_t> w(N * K);
    for (auto& x : w) x = static_cast<int8_t>(d4(rng));
    w[0] = -8;
    std::vector<uint8_t> packed(N * K / 2);
    quantc::pack_int4_chunked(w.data(), N, K, packed.data());
    std::vector<float> ws(N * (K / G)), bias(N), want(M * N);
    for (size_t i = 0; i < ws.size(); ++i) ws[i] = 0.01f + 0.001f * static_cast<float>(i % 13);
    for (int n = 0; n < N; ++n) bias[n] = 0.25f * n;
    const float as = 0.02f;
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) {
        float acc = 0;
        for (int g = 0; g < K / G; ++g) {
          int32_t s = 0;
          for (int k = g * G; k < (g + 1) * G; ++k) s += a[m * K + k] * w[n * K + k];
          acc += static_cast<float>(s) * (as * ws[n * (K / G) + g]);
        }
        want[m * N + n] = acc + bias[n];
      }
    for (auto isa : {quantc::Isa::Reference, quantc::Isa::Avx2, quantc::Isa::Avx512Vnni}) {
      if (static_cast<int>(isa) > static_cast<int>(quantc::best_isa())) continue;
      std::vector<float> y(M * N);
      quantc::matmul_int4_int8(a.data(), packed.data(), M, N, K, G, as, ws.data(), bias.data(), y.data(), isa);
      ASSERT_EQ(y, want) << quantc::isa_name(isa) << " M=" << M << " N=" << N << " K=" << K << " G=" << G;
    }
  }
}

TEST(MatMulInt4Int8, RejectsBadShapes) {
  std::vector<int8_t> a(48);
  std::vector<uint8_t> w(24);
  std::vector<float> s(1), y(1);
  EXPECT_THROW(quantc::matmul_int4_int8(a.data(), w.data(), 1, 1, 48, 32, 1.f, s.data(), nullptr, y.data(), quantc::Isa::Reference), std::invalid_argument);
}

}  // namespace

namespace {

TEST(MatMulInt8, PackedVnniGemmEqualsTheReference) {
  if (quantc::best_isa() != quantc::Isa::Avx512Vnni) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  std::mt19937 rng(17);
  for (auto [M, N, K] : std::vector<std::tuple<int, int, int>>{{1, 1, 1}, {1, 16, 4}, {5, 33, 7}, {4, 32, 64}, {9, 50, 130}, {64, 96, 512}}) {
    auto a = random_int8(M * K, rng), b = random_int8(N * K, rng);
    a[0] = -128;
    b[0] = -128;
    std::vector<float> bs(N), bias(N), got(M * N), want(M * N);
    for (int n = 0; n < N; ++n) { bs[n] = 0.001f * (n + 1); bias[n] = 0.5f * n; }
    quantc::matmul_int8(a.data(), b.data(), M, N, K, 0.03f, bs.data(), bias.data(), want.data(), quantc::Isa::Reference);
    auto packed = quantc::pack_b_vnni(b.data(), N, K);
    quantc::matmul_int8_vnni_packed(a.data(), packed, M, 0.03f, bs.data(), bias.data(), got.data());
    ASSERT_EQ(got, want) << "M=" << M << " N=" << N << " K=" << K;
  }
}

TEST(MatMulInt8, PackedAvx2GemmEqualsTheReference) {
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(19);
  for (auto [M, N, K] : std::vector<std::tuple<int, int, int>>{{1, 1, 1}, {1, 8, 2}, {5, 33, 7}, {4, 16, 64}, {9, 50, 131}, {64, 96, 512}, {3, 2048, 512}}) {
    auto a = random_int8(M * K, rng), b = random_int8(N * K, rng);
    a[0] = -128;
    b[0] = -128;
    std::vector<float> bs(N), bias(N), got(M * N), want(M * N);
    for (int n = 0; n < N; ++n) { bs[n] = 0.001f * (n + 1); bias[n] = 0.5f * n; }
    auto packed = quantc::pack_b_avx2(b.data(), N, K);
    for (bool with_bias : {true, false}) {
      const float* bp = with_bias ? bias.data() : nullptr;
      quantc::matmul_int8(a.data(), b.data(), M, N, K, 0.03f, bs.data(), bp, want.data(), quantc::Isa::Reference);
      std::fill(got.begin(), got.end(), -1.f);
      quantc::matmul_int8_avx2_packed(a.data(), packed, M, 0.03f, bs.data(), bp, got.data());
      ASSERT_EQ(got, want) << "M=" << M << " N=" << N << " K=" << K << " bias " << with_bias;
    }
  }
}

// 7-bit weights ([-64, 63]) take the u8s8 (vpmaddubsw) layout; bit-exact on odd shapes, K and N
// tails, the extreme weights and activations.
TEST(MatMulInt8, PackedAvx2U8s8GemmEqualsTheReference) {
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(29);
  std::uniform_int_distribution<int> d7(-64, 63);
  for (int M : {1, 3, 17})
    for (int N : {1, 7, 33})
      for (int K : {1, 3, 5, 63, 257}) {
        auto a = random_int8(M * K, rng);
        std::vector<int8_t> b(N * K);
        for (auto& x : b) x = static_cast<int8_t>(d7(rng));
        a[0] = -128;
        a[M * K - 1] = 127;
        b[0] = -64;
        b[N * K - 1] = 63;
        if (K > 2) {  // a row of only -64 weights against -128 activations: the largest pair sums
          for (int k = 0; k < K; ++k) { b[k] = -64; a[k] = -128; }
          for (int k = 0; k < K && N > 1; ++k) b[K + k] = 63;
        }
        auto packed = quantc::pack_b_avx2(b.data(), N, K);
        ASSERT_TRUE(packed.u8s8) << "N=" << N << " K=" << K;
        std::vector<float> bs(N), bias(N), got(M * N), want(M * N);
        for (int n = 0; n < N; ++n) { bs[n] = 0.001f * (n + 1); bias[n] = 0.5f * n - 3; }
        quantc::matmul_int8(a.data(), b.data(), M, N, K, 0.03f, bs.data(), bias.data(), want.data(), quantc::Isa::Reference);
        std::fill(got.begin(), got.end(), -1.f);
        quantc::matmul_int8_avx2_packed(a.data(), packed, M, 0.03f, bs.data(), bias.data(), got.data());
        ASSERT_EQ(got, want) << "M=" << M << " N=" << N << " K=" << K;
        // The int32 sums themselves: scale 1, no bias.
        std::vector<float> ones(N, 1.f);
        quantc::matmul_int8(a.data(), b.data(), M, N, K, 1.f, ones.data(), nullptr, want.data(), quantc::Isa::Reference);
        quantc::matmul_int8_avx2_packed(a.data(), packed, M, 1.f, ones.data(), nullptr, got.data());
        ASSERT_EQ(got, want) << "sums M=" << M << " N=" << N << " K=" << K;
      }
}

// One weight outside [-64, 63] (64 or -65) keeps the vpmaddwd layout, still exact.
TEST(MatMulInt8, PackedAvx2WithAn8BitWeightTakesTheS16Path) {
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(31);
  std::uniform_int_distribution<int> d7(-64, 63);
  for (int outlier : {64, -65})
    for (auto [M, N, K] : std::vector<std::tuple<int, int, int>>{{3, 7, 5}, {17, 33, 257}}) {
      auto a = random_int8(M * K, rng);
      std::vector<int8_t> b(N * K);
      for (auto& x : b) x = static_cast<int8_t>(d7(rng));
      a[0] = -128;
      b[N * K / 2] = static_cast<int8_t>(outlier);
      auto packed = quantc::pack_b_avx2(b.data(), N, K);
      EXPECT_FALSE(packed.u8s8) << outlier;
      std::vector<float> bs(N, 0.02f), got(M * N), want(M * N);
      quantc::matmul_int8(a.data(), b.data(), M, N, K, 0.03f, bs.data(), nullptr, want.data(), quantc::Isa::Reference);
      quantc::matmul_int8_avx2_packed(a.data(), packed, M, 0.03f, bs.data(), nullptr, got.data());
      ASSERT_EQ(got, want) << "outlier " << outlier << " M=" << M << " N=" << N << " K=" << K;
    }
}

// The packed AVX2 int8 GEMM with AVX-VNNI's fused forms (vpdpbusd for 7-bit weights, vpdpwssd for 8-bit ones) and without
// them: the reference's results bit for bit, both layouts, odd shapes, the extreme operands.
TEST(MatMulInt8, PackedAvx2GemmWithAndWithoutAvxVnniEqualsTheReference) {
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU";
  if (!quantc::avx_vnni_present()) GTEST_SKIP() << "this CPU has no AVX-VNNI (CPUID.7.1:EAX bit 4): only the plain AVX2 tiles run";
  std::mt19937 rng(37);
  std::uniform_int_distribution<int> d7(-64, 63);
  int ran = 0;
  for (bool seven : {true, false})
    for (auto [M, N, K] : std::vector<std::tuple<int, int, int>>{{1, 7, 5}, {3, 33, 63}, {17, 50, 257}, {64, 96, 512}}) {
      auto a = random_int8(M * K, rng);
      std::vector<int8_t> b(N * K);
      for (auto& x : b) x = static_cast<int8_t>(seven ? d7(rng) : static_cast<int>(rng() % 256) - 128);
      for (int k = 0; k < K; ++k) { a[k] = -128; b[k] = seven ? -64 : -128; }
      auto packed = quantc::pack_b_avx2(b.data(), N, K);
      ASSERT_EQ(packed.u8s8, seven);
      std::vector<float> bs(N), bias(N), want(M * N);
      for (int n = 0; n < N; ++n) { bs[n] = 0.001f * (n + 1); bias[n] = 0.5f * n - 3; }
      quantc::matmul_int8(a.data(), b.data(), M, N, K, 0.03f, bs.data(), bias.data(), want.data(), quantc::Isa::Reference);
      for (int mode : {1, 0}) {
        quantc::set_avx_vnni(mode);
        std::vector<float> got(M * N, -1.f);
        quantc::matmul_int8_avx2_packed(a.data(), packed, M, 0.03f, bs.data(), bias.data(), got.data());
        quantc::set_avx_vnni(-1);
        ASSERT_EQ(got, want) << (mode ? "AVX-VNNI" : "AVX2") << (seven ? " u8s8" : " s16") << " M=" << M << " N=" << N << " K=" << K;
        ++ran;
      }
    }
  EXPECT_EQ(ran, 16);
}

// A host's runner gets parallel_for's chunks (here run in reverse order, as a pool may), every index
// is covered once, and the previous runner is back after the scope.
struct CountingHost {
  int calls = 0;
  int64_t chunks = 0;
};

void reverse_runner(void* host, int64_t chunks, void (*chunk)(void*, int64_t), void* job) {
  auto& h = *static_cast<CountingHost*>(host);
  ++h.calls;
  h.chunks += chunks;
  for (int64_t i = chunks - 1; i >= 0; --i) chunk(job, i);
}

void mark(void* p, int64_t b, int64_t e) {
  auto& hits = *static_cast<std::vector<int>*>(p);
  for (int64_t i = b; i < e; ++i) ++hits[i];
}

TEST(ParallelFor, RunsOnTheHostsRunnerWithinItsScope) {
  const int64_t count = 1001;
  std::vector<int> hits(count, 0);
  CountingHost host;
  {
    quantc::ScopedParallelRunner scope(reverse_runner, &host);
    quantc::parallel_for(count, 1 << 12, mark, &hits);
    quantc::parallel_for(3, 1, mark, &hits);  // small work: runs inline, not on the runner
  }
  quantc::parallel_for(count, 1 << 12, mark, &hits);  // scope over: own threads again
  EXPECT_EQ(host.calls, std::thread::hardware_concurrency() > 1 ? 1 : 0);
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(hits[i], i < 3 ? 3 : 2) << i;
  // The same GEMM with and without the runner.
  std::mt19937 rng(23);
  auto a = random_int8(64 * 256, rng), b = random_int8(96 * 256, rng);
  std::vector<int32_t> own(64 * 96), hosted(64 * 96);
  quantc::matmul_int8_accumulate(a.data(), b.data(), 64, 96, 256, own.data(), quantc::best_isa());
  {
    quantc::ScopedParallelRunner scope(reverse_runner, &host);
    quantc::matmul_int8_accumulate(a.data(), b.data(), 64, 96, 256, hosted.data(), quantc::best_isa());
  }
  EXPECT_EQ(own, hosted);
}

}  // namespace

namespace {

// The packed GEMM of MatMulInt4Int8 against the plain definition, bit for bit: the int32 group sums are
// exact and the float fold keeps the reference's order and rounding (acc += float(sum) * (a_scale * w_scale),
// in group order, then + bias; no fused multiply-add). Odd shapes: M = 1 (the decode tile), 2..4, 17, 129
// (tile and 64-row-block remainders), N not a multiple of 16 (masked panels), K = 64 .. 4096, G = 32/64/128.
TEST(MatMulInt4Int8, PackedGemmEqualsTheReferenceBitForBit) {
  std::mt19937 rng(23);
  std::uniform_int_distribution<int> d4(-8, 7);
  const std::vector<std::tuple<int, int, int, int>> shapes = {
      {1, 1, 64, 32},     {1, 13, 128, 64},  {1, 70, 4096, 128}, {2, 33, 256, 32},  {3, 17, 192, 64},   {4, 64, 512, 128},
      {5, 16, 64, 64},    {17, 50, 1024, 32}, {17, 7, 4096, 64},  {129, 33, 512, 128}, {129, 1, 64, 32}, {66, 96, 320, 32}};
  int ran = 0;
  for (auto [M, N, K, G] : shapes) {
    auto a = random_int8(M * K, rng);
    std::vector<int8_t> w(N * K);
    for (auto& x : w) x = static_cast<int8_t>(d4(rng));
    a[0] = -128;  // extremes of both operands
    w[0] = -8;
    w[N * K - 1] = 7;
    std::vector<uint8_t> chunked(N * K / 2);
    quantc::pack_int4_chunked(w.data(), N, K, chunked.data());
    std::vector<float> ws(N * (K / G)), bias(N);
    for (size_t i = 0; i < ws.size(); ++i) ws[i] = 0.003f + 0.0011f * static_cast<float>(i % 29);
    for (int n = 0; n < N; ++n) bias[n] = 0.125f * n - 1.0f;
    const float as = 0.0173f;
    const quantc::PackedInt4 packed = quantc::pack_int4_gemm(chunked.data(), ws.data(), N, K, G);
    for (bool with_bias : {true, false}) {
      std::vector<float> want(M * N);
      quantc::matmul_int4_int8(a.data(), chunked.data(), M, N, K, G, as, ws.data(), with_bias ? bias.data() : nullptr, want.data(),
                               quantc::Isa::Reference);
      for (auto isa : {quantc::Isa::Avx2, quantc::Isa::Avx512Vnni}) {
        if (static_cast<int>(isa) > static_cast<int>(quantc::best_isa())) continue;
        std::vector<float> y(M * N, -1.0f);
        quantc::matmul_int4_int8_packed(a.data(), packed, M, as, with_bias ? bias.data() : nullptr, y.data(), isa);
        ASSERT_EQ(y, want) << quantc::isa_name(isa) << " M=" << M << " N=" << N << " K=" << K << " G=" << G << " bias=" << with_bias;
        ++ran;
      }
    }
  }
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU: the packed GEMM has no path to run";
  if (quantc::best_isa() == quantc::Isa::Avx2) std::printf("[ skipped  ] AVX-512 VNNI path: not supported by this CPU\n");
  EXPECT_GT(ran, 0);
}

// The Avx2 path's GEMM tile with AVX-VNNI (vpdpbusd on ymm) and without it give the reference's results bit for bit: the
// shapes above and the extreme operands, both tiles forced in turn.
TEST(MatMulInt4Int8, PackedGemmWithAndWithoutAvxVnniEqualsTheReferenceBitForBit) {
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU: the packed GEMM has no path to run";
  if (!quantc::avx_vnni_present()) GTEST_SKIP() << "this CPU has no AVX-VNNI (CPUID.7.1:EAX bit 4): only the plain AVX2 tile runs";
  std::mt19937 rng(29);
  std::uniform_int_distribution<int> d4(-8, 7);
  int ran = 0;
  for (auto [M, N, K, G] : std::vector<std::tuple<int, int, int, int>>{
           {9, 33, 256, 32}, {17, 50, 1024, 32}, {66, 96, 320, 32}, {129, 33, 512, 128}, {70, 19, 384, 64}, {5, 16, 64, 64}}) {
    auto a = random_int8(M * K, rng);
    std::vector<int8_t> w(N * K);
    for (auto& x : w) x = static_cast<int8_t>(d4(rng));
    for (int k = 0; k < K; ++k) { a[k] = -128; w[k] = k % 2 ? 7 : -8; }  // one row and column at the extremes
    std::vector<uint8_t> chunked(N * K / 2);
    quantc::pack_int4_chunked(w.data(), N, K, chunked.data());
    std::vector<float> ws(N * (K / G)), bias(N), want(M * N);
    for (size_t i = 0; i < ws.size(); ++i) ws[i] = 0.002f + 0.0013f * static_cast<float>(i % 31);
    for (int n = 0; n < N; ++n) bias[n] = 0.25f * n - 2.0f;
    const quantc::PackedInt4 packed = quantc::pack_int4_gemm(chunked.data(), ws.data(), N, K, G);
    quantc::matmul_int4_int8(a.data(), chunked.data(), M, N, K, G, 0.021f, ws.data(), bias.data(), want.data(), quantc::Isa::Reference);
    for (int mode : {1, 0}) {
      quantc::set_avx_vnni(mode);
      EXPECT_EQ(quantc::avx_vnni_in_use(), mode == 1);
      std::vector<float> y(M * N, -1.0f);
      quantc::matmul_int4_int8_packed(a.data(), packed, M, 0.021f, bias.data(), y.data(), quantc::Isa::Avx2);
      quantc::set_avx_vnni(-1);
      ASSERT_EQ(y, want) << (mode ? "AVX-VNNI" : "AVX2") << " M=" << M << " N=" << N << " K=" << K << " G=" << G;
      ++ran;
    }
  }
  EXPECT_EQ(ran, 12);
}

// The largest sums the int16 accumulation of the AVX2 tiles must hold: every weight at 7 (biased 15) or -8 (biased 0) against
// activations of -128 or 127 in every position, so each int16 lane sums 16 products of magnitude 15 * 128 (30720 < 2^15)
// per four blocks; odd M (row remainders 1 and 2 of the 3-row tile), N not a multiple of 16, every group size.
TEST(MatMulInt4Int8, PackedGemmIsExactAtTheInt16Limit) {
  int ran = 0;
  for (int G : {32, 64, 128})
    for (int M : {2, 7, 8, 66})
      for (auto [wv, av] : {std::pair<int, int>{7, -128}, {7, 127}, {-8, -128}, {-8, 127}}) {
        const int N = 19, K = 384;
        std::vector<int8_t> a(static_cast<size_t>(M) * K, static_cast<int8_t>(av)), w(static_cast<size_t>(N) * K, static_cast<int8_t>(wv));
        for (int k = 0; k < K; k += 5) a[k] = static_cast<int8_t>(-av - 1);  // one row not constant: a sign flip every 5th
        std::vector<uint8_t> chunked(static_cast<size_t>(N) * K / 2);
        quantc::pack_int4_chunked(w.data(), N, K, chunked.data());
        std::vector<float> ws(static_cast<size_t>(N) * (K / G), 0.25f), want(static_cast<size_t>(M) * N);
        const quantc::PackedInt4 packed = quantc::pack_int4_gemm(chunked.data(), ws.data(), N, K, G);
        quantc::matmul_int4_int8(a.data(), chunked.data(), M, N, K, G, 1.0f, ws.data(), nullptr, want.data(), quantc::Isa::Reference);
        // the reference's own check: a constant row gives K * w * a * 0.25 exactly (small integers in float)
        EXPECT_EQ(want[static_cast<size_t>(N)], 0.25f * static_cast<float>(K * wv * av));
        for (auto isa : {quantc::Isa::Avx2, quantc::Isa::Avx512Vnni}) {
          if (static_cast<int>(isa) > static_cast<int>(quantc::best_isa())) continue;
          std::vector<float> y(want.size(), -1.0f);
          for (int mode : {0, 1}) {  // the plain AVX2 tile (int16 sums) and, where present, the AVX-VNNI one
            if (isa != quantc::Isa::Avx2 && mode == 1) continue;
            quantc::set_avx_vnni(mode);
            quantc::matmul_int4_int8_packed(a.data(), packed, M, 1.0f, nullptr, y.data(), isa);
            quantc::set_avx_vnni(-1);
            ASSERT_EQ(y, want) << quantc::isa_name(isa) << " M=" << M << " G=" << G << " w=" << wv << " a=" << av << " avxvnni " << mode;
          }
          ++ran;
        }
      }
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU: the packed GEMM has no path to run";
  if (quantc::best_isa() == quantc::Isa::Avx2) std::printf("[ skipped  ] AVX-512 VNNI path: not supported by this CPU\n");
  EXPECT_GT(ran, 0);
}

TEST(MatMulInt4Int8, PackedGemmRejectsBadShapesAndTheReferencePath) {
  std::vector<uint8_t> w(64);
  std::vector<float> s(4);
  EXPECT_THROW(quantc::pack_int4_gemm(w.data(), s.data(), 2, 48, 32), std::invalid_argument);
  EXPECT_THROW(quantc::pack_int4_gemm(w.data(), s.data(), 2, 64, 48), std::invalid_argument);
  const quantc::PackedInt4 p = quantc::pack_int4_gemm(w.data(), s.data(), 2, 64, 32);
  std::vector<int8_t> a(64);
  std::vector<float> y(2);
  EXPECT_THROW(quantc::matmul_int4_int8_packed(a.data(), p, 1, 1.f, nullptr, y.data(), quantc::Isa::Reference), std::invalid_argument);
}

}  // namespace
