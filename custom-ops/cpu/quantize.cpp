#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "quantc/hadamard.h"
#include "quantc/quantize.h"

namespace quantc {
namespace {

void quantize_ref(const float* x, int64_t count, float scale, int8_t* y) {
  for (int64_t i = 0; i < count; ++i) {
    const float v = std::nearbyint(x[i] / scale);  // default rounding mode: half to even
    y[i] = static_cast<int8_t>(v > 127.f ? 127.f : v < -128.f ? -128.f : v);
  }
}

// 8 values: divide, round to nearest even, clamp to [-128, 127], convert.
__attribute__((target("avx2"))) inline __m256i q8(const float* p, __m256 s) {
  const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(p), s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-128.f)), _mm256_set1_ps(127.f)));
}

// 32 at a time, the 4 x 8 int32 packed into 32 int8 (packs works within 128-bit lanes; the permute
// puts the four groups back in order).
__attribute__((target("avx2"))) void quantize_avx2(const float* x, int64_t count, float scale, int8_t* y) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    const __m256i ab = _mm256_packs_epi32(q8(x + i, s), q8(x + i + 8, s)), cd = _mm256_packs_epi32(q8(x + i + 16, s), q8(x + i + 24, s));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order));
  }
  quantize_ref(x + i, count - i, scale, y + i);
}

float absmax_ref(const float* x, int64_t K) {
  float m = 0.f;
  for (int64_t k = 0; k < K; ++k) {
    if (std::isnan(x[k])) return x[k];
    m = std::max(m, std::fabs(x[k]));
  }
  return m;
}

// max |x| over 8 lanes at a time; a NaN anywhere is returned as NaN (vmaxps alone would drop it).
__attribute__((target("avx2"))) float absmax_avx2(const float* x, int64_t K) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m0 = _mm256_setzero_ps(), m1 = m0, nan = m0;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 a = _mm256_loadu_ps(x + k), b = _mm256_loadu_ps(x + k + 8);
    m0 = _mm256_max_ps(m0, _mm256_andnot_ps(sign, a));
    m1 = _mm256_max_ps(m1, _mm256_andnot_ps(sign, b));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
  }
  if (!_mm256_testz_ps(nan, nan)) return std::numeric_limits<float>::quiet_NaN();
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(m0, m1));
  float m = absmax_ref(x + k, K - k);
  if (std::isnan(m)) return m;
  for (float l : lanes) m = std::max(m, l);
  return m;
}

struct HqJob {
  const float* x;
  int8_t* y;
  int64_t n;
  float scale;
  Isa isa;
};

void hq_rows(void* p, int64_t r0, int64_t r1) {
  const HqJob& j = *static_cast<const HqJob*>(p);
  constexpr int64_t kBlock = 16;  // rows transformed per hadamard_transform call (it sets up H_m each call)
  std::vector<float> tmp(static_cast<size_t>(std::min(kBlock, r1 - r0) * j.n));
  for (int64_t r = r0; r < r1; r += kBlock) {
    const int64_t rows = std::min(kBlock, r1 - r);
    hadamard_transform_rows(j.x + r * j.n, tmp.data(), rows, j.n, true, j.isa);
    quantize_int8(tmp.data(), rows * j.n, j.scale, j.y + r * j.n, j.isa);
  }
}

}  // namespace

void quantize_int8(const float* x, int64_t count, float scale, int8_t* y, Isa isa) {
  if (isa == Isa::Reference) quantize_ref(x, count, scale, y);
  else quantize_avx2(x, count, scale, y);
}

float row_scale_int8(const float* x, int64_t K, Isa isa) {
  const float m = isa == Isa::Reference ? absmax_ref(x, K) : absmax_avx2(x, K);
  return (std::isnan(m) ? m : std::max(m, 1e-12f)) / 127.f;
}

void quantize_rows_int8(const float* x, int64_t M, int64_t K, int8_t* q, float* s, Isa isa) {
  for (int64_t m = 0; m < M; ++m) {
    s[m] = row_scale_int8(x + m * K, K, isa);
    quantize_int8(x + m * K, K, s[m], q + m * K, isa);
  }
}

namespace {

struct QJob {
  const float* x;
  int8_t* y;
  int64_t count;
  float scale;
  Isa isa;
};

constexpr int64_t kQuantizeBlock = 1 << 14;  // values per parallel_for item

void quantize_blocks(void* p, int64_t b0, int64_t b1) {
  const QJob& j = *static_cast<const QJob*>(p);
  const int64_t begin = b0 * kQuantizeBlock, end = std::min(j.count, b1 * kQuantizeBlock);
  quantize_int8(j.x + begin, end - begin, j.scale, j.y + begin, j.isa);
}

}  // namespace

void quantize_int8_parallel(const float* x, int64_t count, float scale, int8_t* y) {
  if (count <= 0) return;
  QJob job{x, y, count, scale, best_isa()};
  parallel_for((count + kQuantizeBlock - 1) / kQuantizeBlock, kQuantizeBlock * 4, quantize_blocks, &job);
}

void hadamard_quantize_int8(const float* x, int8_t* y, int64_t rows, int64_t n, float scale) {
  int64_t p2;
  int m;
  if (!hadamard_split(n, &p2, &m)) {
    hadamard_transform(x, nullptr, 0, n, true);  // throws its error for this n
    return;
  }
  HqJob job{x, y, n, scale, best_isa()};
  parallel_for(rows, n * 8, hq_rows, &job);
}

}  // namespace quantc
