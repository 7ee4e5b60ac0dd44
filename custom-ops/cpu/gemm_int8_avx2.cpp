// The AVX2 int8 GEMM on a packed weight: register-blocked (4 rows x 16 channels of int32
// accumulators), the weight read once per 4 rows of A instead of once per row. Exact, two layouts:
// - s16: int8 pairs are sign-extended to int16 and multiplied-and-added to int32 (vpmaddwd), the same
//   sums as the reference;
// - u8s8 (every weight in [-64, 63]): A + 128 as u8 times the weight's k-quads with vpmaddubsw (pairs
//   to int16: |2 * 255 * 64| <= 32640, no saturation), vpmaddwd with ones to int32, then minus
//   128 * colsum(B) per channel. Twice the multiply-adds per instruction of the s16 path.
// With AVX-VNNI both use its fused forms (vpdpbusd, vpdpwssd): the same integers.
// This file is built with -ffp-contract=off so the dequantisation rounds like the reference.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "quantc/gemm.h"

namespace quantc {

PackedBAvx2 pack_b_avx2(const int8_t* b, int64_t N, int64_t K) {
  PackedBAvx2 p;
  p.N = N;
  p.K = K;
  p.panels = (N + 7) / 8;
  p.u8s8 = std::all_of(b, b + N * K, [](int8_t w) { return w >= -64 && w <= 63; });
  const int64_t kg = p.u8s8 ? 4 : 2;  // k per 32-bit (u8s8) or 16-bit lane group of a channel
  p.Kp = (K + kg - 1) / kg;
  p.data.assign(static_cast<size_t>(p.panels * p.Kp * 8 * kg), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) p.data[((n / 8 * p.Kp + k / kg) * 8 + n % 8) * kg + k % kg] = b[n * K + k];
  if (p.u8s8) {
    p.colsum128.assign(static_cast<size_t>(p.panels * 8), 0);
    for (int64_t n = 0; n < N; ++n) {
      int64_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += b[n * K + k];
      // The sums wrap modulo 2^32 like the vector adds; the difference is the exact int32 sum.
      p.colsum128[n] = static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(s) * 128u));
    }
  }
  return p;
}

namespace {

constexpr int MR = 4;  // rows of A per micro-tile
constexpr int NP = 2;  // panels (of 8 channels) per micro-tile: 4 x 2 accumulators

struct Job {
  const void* a;  // s16: A sign-extended to int16, rows padded to Kp * 2; u8s8: A + 128 as u8, rows padded to Kp * 4
  const PackedBAvx2* b;
  int64_t M;
  float a_scale;
  const float* b_scale;
  const float* bias;
  float* y;
};

template <int ROWS>
__attribute__((target("avx2"))) void store(const Job& j, __m256i (&acc)[ROWS][NP], int64_t m0, int64_t p0, int np) {
  const PackedBAvx2& b = *j.b;
  const __m256 as = _mm256_set1_ps(j.a_scale);
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < np; ++c) {
      const int64_t n0 = (p0 + c) * 8;
      float* y = j.y + (m0 + r) * b.N + n0;
      if (n0 + 8 <= b.N) {
        const __m256 scale = _mm256_mul_ps(as, _mm256_loadu_ps(j.b_scale + n0));
        const __m256 bias = j.bias ? _mm256_loadu_ps(j.bias + n0) : _mm256_setzero_ps();
        _mm256_storeu_ps(y, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][c]), scale), bias));
      } else {
        alignas(32) int32_t out[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(out), acc[r][c]);
        for (int64_t l = 0; n0 + l < b.N; ++l)
          y[l] = static_cast<float>(out[l]) * (j.a_scale * j.b_scale[n0 + l]) + (j.bias ? j.bias[n0 + l] : 0.0f);
      }
    }
}

// VNNI: AVX-VNNI's fused forms (quantc::avx_vnni_in_use()) — vpdpwssd for vpmaddwd + vpaddd here, vpdpbusd for vpmaddubsw +
// vpmaddwd + vpaddd in tile_u8s8 (no saturation in either form: its weights are within [-64, 63]) — the same integers. Both
// instantiations are compiled for AVX-VNNI; its instructions are emitted only where the VNNI branch asks for them (the compiler
// never forms them from other operations), so the plain one runs on any AVX2 CPU.
template <int ROWS, bool VNNI>
__attribute__((target("avx2,avxvnni"))) void tile_s16(const Job& j, int64_t m0, int64_t p0, int np) {
  const PackedBAvx2& b = *j.b;
  const int64_t Kp = b.Kp, lda = Kp * 2;
  const int16_t* a = static_cast<const int16_t*>(j.a);
  __m256i acc[ROWS][NP];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < NP; ++c) acc[r][c] = _mm256_setzero_si256();
  const int8_t* bp[NP];
  for (int c = 0; c < NP; ++c) bp[c] = b.data.data() + (p0 + (c < np ? c : 0)) * Kp * 16;
  for (int64_t q = 0; q < Kp; ++q) {
    __m256i bv[NP];
    for (int c = 0; c < NP; ++c) bv[c] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bp[c] + q * 16)));
    for (int r = 0; r < ROWS; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + (m0 + r) * lda + q * 2, 4);
      const __m256i av = _mm256_set1_epi32(pair);
      for (int c = 0; c < NP; ++c) {
        if constexpr (VNNI) acc[r][c] = _mm256_dpwssd_avx_epi32(acc[r][c], av, bv[c]);
        else acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(av, bv[c]));
      }
    }
  }
  store<ROWS>(j, acc, m0, p0, np);
}

// The u8s8 sums less 128 · colsum(B) per channel, then dequantised and stored.
template <int ROWS>
__attribute__((target("avx2"))) inline void finish_u8s8(const Job& j, __m256i (&acc)[ROWS][NP], int64_t m0, int64_t p0, int np) {
  for (int c = 0; c < np; ++c) {
    const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(j.b->colsum128.data() + (p0 + c) * 8));
    for (int r = 0; r < ROWS; ++r) acc[r][c] = _mm256_sub_epi32(acc[r][c], corr);
  }
  store<ROWS>(j, acc, m0, p0, np);
}

template <int ROWS, bool VNNI>
__attribute__((target("avx2,avxvnni"))) void tile_u8s8(const Job& j, int64_t m0, int64_t p0, int np) {
  const PackedBAvx2& b = *j.b;
  const int64_t Kp = b.Kp, lda = Kp * 4;
  const uint8_t* a = static_cast<const uint8_t*>(j.a);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[ROWS][NP];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < NP; ++c) acc[r][c] = _mm256_setzero_si256();
  const int8_t* bp[NP];
  for (int c = 0; c < NP; ++c) bp[c] = b.data.data() + (p0 + (c < np ? c : 0)) * Kp * 32;
  for (int64_t q = 0; q < Kp; ++q) {
    __m256i bv[NP];
    for (int c = 0; c < NP; ++c) bv[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp[c] + q * 32));
    for (int r = 0; r < ROWS; ++r) {
      int32_t quad;
      std::memcpy(&quad, a + (m0 + r) * lda + q * 4, 4);
      const __m256i av = _mm256_set1_epi32(quad);
      for (int c = 0; c < NP; ++c) {
        if constexpr (VNNI) acc[r][c] = _mm256_dpbusd_avx_epi32(acc[r][c], av, bv[c]);
        else acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(_mm256_maddubs_epi16(av, bv[c]), ones));
      }
    }
  }
  finish_u8s8<ROWS>(j, acc, m0, p0, np);
}

template <int ROWS>
void tile(const Job& j, int64_t m0, int64_t p0, int np) {
  const bool vnni = avx_vnni_in_use();
  if (j.b->u8s8) {
    if (vnni) tile_u8s8<ROWS, true>(j, m0, p0, np);
    else tile_u8s8<ROWS, false>(j, m0, p0, np);
  } else {
    if (vnni) tile_s16<ROWS, true>(j, m0, p0, np);
    else tile_s16<ROWS, false>(j, m0, p0, np);
  }
}

void run_blocks(void* p, int64_t t0, int64_t t1) {
  const Job& j = *static_cast<const Job*>(p);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t p0 = t * NP;
    const int np = static_cast<int>(std::min<int64_t>(NP, j.b->panels - p0));
    int64_t m = 0;
    for (; m + MR <= j.M; m += MR) tile<MR>(j, m, p0, np);
    switch (j.M - m) {
      case 3: tile<3>(j, m, p0, np); break;
      case 2: tile<2>(j, m, p0, np); break;
      case 1: tile<1>(j, m, p0, np); break;
      default: break;
    }
  }
}

}  // namespace

void matmul_int8_avx2_packed(const int8_t* a, const PackedBAvx2& b, int64_t M, float a_scale, const float* b_scale, const float* bias, float* y) {
  std::vector<int16_t> a16;
  std::vector<uint8_t> a8;
  const void* ap;
  if (b.u8s8) {
    const int64_t lda = b.Kp * 4;
    a8.assign(static_cast<size_t>(M * lda), 0);  // the padding k meets zero weights: no term, no correction
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < b.K; ++k) a8[m * lda + k] = static_cast<uint8_t>(a[m * b.K + k]) ^ 0x80u;
    ap = a8.data();
  } else {
    const int64_t lda = b.Kp * 2;
    a16.assign(static_cast<size_t>(M * lda), 0);  // the padding k (odd K) is 0 in A and B
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < b.K; ++k) a16[m * lda + k] = a[m * b.K + k];
    ap = a16.data();
  }
  Job job{ap, &b, M, a_scale, b_scale, bias, y};
  parallel_for((b.panels + NP - 1) / NP, M * b.K * 8 * NP, run_blocks, &job);
}

}  // namespace quantc
