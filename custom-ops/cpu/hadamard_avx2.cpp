// AVX2 fast Walsh-Hadamard transform and H_m mix, and the mix on AVX-512 (see hadamard_avx2.h): bit-identical to the scalar path.
#include "hadamard_avx2.h"

#include <immintrin.h>

#include <algorithm>

namespace quantc::detail {
namespace {

// The butterflies of stages h = 1, 2, 4 inside each 8-float vector, then h = 8, 16, ... across vectors. Lane i of a
// stage's lower half gets a + b (its own value plus its partner's), the upper half b' - a' (the partner's minus its own):
// exactly the scalar v[j] = a + b, v[j + h] = a - b.
__attribute__((target("avx2"))) void fwht_avx2(float* v, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    __m256 x = _mm256_loadu_ps(v + i);
    __m256 s = _mm256_permute_ps(x, 0xB1);  // h = 1: swap neighbours
    x = _mm256_blend_ps(_mm256_add_ps(x, s), _mm256_sub_ps(s, x), 0xAA);
    s = _mm256_permute_ps(x, 0x4E);  // h = 2: swap pairs
    x = _mm256_blend_ps(_mm256_add_ps(x, s), _mm256_sub_ps(s, x), 0xCC);
    s = _mm256_permute2f128_ps(x, x, 1);  // h = 4: swap halves
    x = _mm256_blend_ps(_mm256_add_ps(x, s), _mm256_sub_ps(s, x), 0xF0);
    _mm256_storeu_ps(v + i, x);
  }
  for (int64_t h = 8; h < n; h <<= 1)
    for (int64_t i = 0; i < n; i += h << 1)
      for (int64_t j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(v + j), b = _mm256_loadu_ps(v + j + h);
        _mm256_storeu_ps(v + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(v + j + h, _mm256_sub_ps(a, b));
      }
}

// tmp[a][b0 .. b0 + 8V) = sum over c of ±y[c][..] (sign flips by xor), V vectors of accumulators held across c, for A output
// rows a at once (each y vector loaded once for all A; every sum still runs over c in order, so the bits do not depend on A).
template <int V, int A>
__attribute__((target("avx2"))) void mix_rows_avx2(const float* y, int64_t p2, int m, int a0, const uint32_t* sign, float* tmp,
                                                   __m256 sc, bool normalize) {
  for (int64_t b0 = 0; b0 < p2; b0 += 8 * V) {
    __m256 acc[A][V];
    for (int r = 0; r < A; ++r)
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
    for (int c = 0; c < m; ++c) {
      const float* src = y + c * p2 + b0;
      __m256 x[V];
      for (int v = 0; v < V; ++v) x[v] = _mm256_loadu_ps(src + 8 * v);
      for (int r = 0; r < A; ++r) {
        const __m256 sg = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(sign[(a0 + r) * m + c])));
        for (int v = 0; v < V; ++v) acc[r][v] = _mm256_add_ps(acc[r][v], _mm256_xor_ps(x[v], sg));
      }
    }
    for (int r = 0; r < A; ++r)
      for (int v = 0; v < V; ++v)
        _mm256_storeu_ps(tmp + (a0 + r) * p2 + b0 + 8 * v, normalize ? _mm256_mul_ps(acc[r][v], sc) : acc[r][v]);
  }
}

template <int V>
__attribute__((target("avx2"))) void mix_avx2(const float* y, int64_t p2, int m, const uint32_t* sign, float* tmp, float scale,
                                              bool normalize) {
  const __m256 sc = _mm256_set1_ps(scale);
  int a = 0;
  for (; a + 2 <= m; a += 2) mix_rows_avx2<V, 2>(y, p2, m, a, sign, tmp, sc, normalize);
  for (; a < m; ++a) mix_rows_avx2<V, 1>(y, p2, m, a, sign, tmp, sc, normalize);
}

// The H_m mix on AVX-512: 16 floats per vector and one fused multiply-add by ±1.0 per term instead of a sign flip and an add —
// fma(x, ±1, acc) rounds acc ± x once, exactly as the add does, so the bits are the scalar path's (every sum over c in order).
// A = 4 output rows per pass over the inputs.
template <int V, int A>
__attribute__((target("avx512f"))) void mix_rows_avx512(const float* y, int64_t p2, int m, int a0, const uint32_t* sign, float* tmp,
                                                       __m512 sc, bool normalize) {
  for (int64_t b0 = 0; b0 < p2; b0 += 16 * V) {
    __m512 acc[A][V];
    for (int r = 0; r < A; ++r)
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
    for (int c = 0; c < m; ++c) {
      const float* src = y + c * p2 + b0;
      __m512 x[V];
      for (int v = 0; v < V; ++v) x[v] = _mm512_loadu_ps(src + 16 * v);
      for (int r = 0; r < A; ++r) {
        // ±1.0f: the bits of 1.0f with the sign bit of H_m's entry.
        const __m512 pm = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(0x3F800000u | sign[(a0 + r) * m + c])));
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(x[v], pm, acc[r][v]);
      }
    }
    for (int r = 0; r < A; ++r)
      for (int v = 0; v < V; ++v)
        _mm512_storeu_ps(tmp + (a0 + r) * p2 + b0 + 16 * v, normalize ? _mm512_mul_ps(acc[r][v], sc) : acc[r][v]);
  }
}

template <int V>
__attribute__((target("avx512f"))) void mix_avx512(const float* y, int64_t p2, int m, const uint32_t* sign, float* tmp, float scale,
                                                  bool normalize) {
  const __m512 sc = _mm512_set1_ps(scale);
  int a = 0;
  for (; a + 4 <= m; a += 4) mix_rows_avx512<V, 4>(y, p2, m, a, sign, tmp, sc, normalize);
  for (; a < m; ++a) mix_rows_avx512<V, 1>(y, p2, m, a, sign, tmp, sc, normalize);
}

}  // namespace

__attribute__((target("avx2,avx512f"))) void hadamard_row_avx512(float* y, int64_t p2, int m, const uint32_t* sign, float* tmp,
                                                                float scale, bool normalize) {
  if (m <= 1 || p2 % 16 != 0) {
    hadamard_row_avx2(y, p2, m, sign, tmp, scale, normalize);
    return;
  }
  for (int a = 0; a < m; ++a) fwht_avx2(y + a * p2, p2);
  if (p2 % 32 == 0) mix_avx512<2>(y, p2, m, sign, tmp, scale, normalize);
  else mix_avx512<1>(y, p2, m, sign, tmp, scale, normalize);
  std::copy(tmp, tmp + m * p2, y);
}

__attribute__((target("avx2"))) void hadamard_row_avx2(float* y, int64_t p2, int m, const uint32_t* sign, float* tmp, float scale,
                                                       bool normalize) {
  for (int a = 0; a < m; ++a) fwht_avx2(y + a * p2, p2);
  if (m > 1) {
    if (p2 % 32 == 0) mix_avx2<4>(y, p2, m, sign, tmp, scale, normalize);
    else if (p2 % 16 == 0) mix_avx2<2>(y, p2, m, sign, tmp, scale, normalize);
    else mix_avx2<1>(y, p2, m, sign, tmp, scale, normalize);
    std::copy(tmp, tmp + m * p2, y);
    return;
  }
  if (!normalize) return;
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t i = 0; i < p2; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), sc));
}

}  // namespace quantc::detail
