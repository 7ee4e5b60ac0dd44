// GCC 12's AVX-512 headers trip -Wuninitialized on their own temporaries (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "quantc/gemm.h"

namespace quantc {

PackedB pack_b_vnni(const int8_t* b, int64_t N, int64_t K) {
  PackedB p;
  p.N = N;
  p.K = K;
  p.Kq = (K + 3) / 4;
  p.panels = (N + 15) / 16;
  p.data.assign(static_cast<size_t>(p.panels * p.Kq * 64), 0);
  p.col_sum.assign(static_cast<size_t>(p.panels * 16), 0);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t panel = n / 16, lane = n % 16;
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      p.data[((panel * p.Kq + k / 4) * 16 + lane) * 4 + k % 4] = b[n * K + k];
      sum += b[n * K + k];
    }
    p.col_sum[n] = sum;
  }
  return p;
}

namespace {

constexpr int MR = 4;  // rows of A per micro-tile
constexpr int NP = 4;  // panels (of 16 channels) per micro-tile: 4 x 4 accumulators
constexpr int NP1 = 8; // panels per micro-tile for single rows (decode): 8 independent accumulator chains

struct Job {
  const uint8_t* a;  // (a + 128) as uint8, rows padded to Kq * 4
  const PackedB* b;
  int64_t M;
  float a_scale;
  const float* b_scale;
  const float* bias;
  float* y;
};

// C[ROWS][16 * PANELS channels] for rows m0.., panels p0.. (np <= PANELS of them exist). ROWS and
// PANELS are template parameters so the accumulators stay in registers (fully unrolled loops).
template <int ROWS, int PANELS>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void tile(const Job& j, int64_t m0, int64_t p0, int np) {
  const PackedB& b = *j.b;
  const int64_t Kq = b.Kq, lda = Kq * 4;
  __m512i acc[ROWS][PANELS];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < PANELS; ++c) acc[r][c] = _mm512_setzero_si512();
  const int8_t* bp[PANELS];
  for (int c = 0; c < PANELS; ++c) bp[c] = b.data.data() + (p0 + (c < np ? c : 0)) * Kq * 64;
  for (int64_t q = 0; q < Kq; ++q) {
    __m512i bv[PANELS];
    for (int c = 0; c < PANELS; ++c) bv[c] = _mm512_loadu_si512(bp[c] + q * 64);
    for (int r = 0; r < ROWS; ++r) {
      int32_t quad;
      std::memcpy(&quad, j.a + (m0 + r) * lda + q * 4, 4);
      const __m512i av = _mm512_set1_epi32(quad);
      for (int c = 0; c < PANELS; ++c) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], av, bv[c]);
    }
  }
  alignas(64) int32_t out[16];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < np; ++c) {
      _mm512_store_si512(out, acc[r][c]);
      const int64_t n0 = (p0 + c) * 16;
      for (int l = 0; l < 16 && n0 + l < b.N; ++l) {
        const int64_t n = n0 + l;
        const int32_t v = out[l] - 128 * b.col_sum[n];
        j.y[(m0 + r) * b.N + n] = static_cast<float>(v) * (j.a_scale * j.b_scale[n]) + (j.bias ? j.bias[n] : 0.0f);
      }
    }
}

void run_panels(void* p, int64_t t0, int64_t t1) {
  const Job& j = *static_cast<const Job*>(p);
  const int64_t panels = j.b->panels;
  if (j.M == 1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p0 = t * NP1;
      tile<1, NP1>(j, 0, p0, static_cast<int>(std::min<int64_t>(NP1, panels - p0)));
    }
    return;
  }
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t p0 = t * NP;
    const int np = static_cast<int>(std::min<int64_t>(NP, panels - p0));
    int64_t m = 0;
    for (; m + MR <= j.M; m += MR) tile<MR, NP>(j, m, p0, np);
    switch (j.M - m) {
      case 3: tile<3, NP>(j, m, p0, np); break;
      case 2: tile<2, NP>(j, m, p0, np); break;
      case 1: tile<1, NP>(j, m, p0, np); break;
      default: break;
    }
  }
}

}  // namespace

void matmul_int8_vnni_packed(const int8_t* a, const PackedB& b, int64_t M, float a_scale, const float* b_scale, const float* bias, float* y) {
  const int64_t lda = b.Kq * 4;
  std::vector<uint8_t> au(static_cast<size_t>(M * lda), 128);  // padding k's: a = 0 → 128; B is 0 there
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < b.K; ++k) au[m * lda + k] = static_cast<uint8_t>(a[m * b.K + k] + 128);
  Job job{au.data(), &b, M, a_scale, b_scale, bias, y};
  const int64_t per = M == 1 ? NP1 : NP;
  parallel_for((b.panels + per - 1) / per, M * b.K * 16 * per, run_panels, &job);
}

}  // namespace quantc
