// The AVX2 (+FMA) and AVX-512 instantiations of the scan and conv tiles (cpu/mamba_simd.inc).
// GCC 12's AVX-512 headers trip -Wuninitialized on their own temporaries (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "mamba_simd.h"

namespace quantc::detail {

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
namespace {

struct V {
  using f = __m256;
  static constexpr int W = 8;
  static f set1(float v) { return _mm256_set1_ps(v); }
  static f load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, f v) { _mm256_storeu_ps(p, v); }
  static f add(f a, f b) { return _mm256_add_ps(a, b); }
  static f sub(f a, f b) { return _mm256_sub_ps(a, b); }
  static f mul(f a, f b) { return _mm256_mul_ps(a, b); }
  static f fma(f a, f b, f c) { return _mm256_fmadd_ps(a, b, c); }
  static f div(f a, f b) { return _mm256_div_ps(a, b); }
  static f min(f a, f b) { return _mm256_min_ps(a, b); }
  static f max(f a, f b) { return _mm256_max_ps(a, b); }
  static f round(f a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static f lt_select(f a, f b, f x, f y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
  static f eq_select(f a, f b, f x, f y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_EQ_OQ)); }
  static f abs(f a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static f pow2i(f n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static f frexp(f x, f& e) {
    const __m256i bits = _mm256_castps_si256(x);
    e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
    return _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
  }
  static f load_i8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
};

#include "mamba_simd.inc"

}  // namespace
}  // namespace avx2

void scan_tile_avx2(const ScanArgs& a, const float* Bf, const float* Cf, int64_t b, int64_t d0, int64_t width, float* scratch) {
  avx2::scan_tile(a, Bf, Cf, b, d0, width, scratch);
}
void conv_tile_avx2(const ConvArgs& a, int64_t b, int64_t d0, int64_t width, float* scratch) { avx2::conv_tile(a, b, d0, width, scratch); }
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
namespace {

struct V {
  using f = __m512;
  static constexpr int W = 16;
  static f set1(float v) { return _mm512_set1_ps(v); }
  static f load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, f v) { _mm512_storeu_ps(p, v); }
  static f add(f a, f b) { return _mm512_add_ps(a, b); }
  static f sub(f a, f b) { return _mm512_sub_ps(a, b); }
  static f mul(f a, f b) { return _mm512_mul_ps(a, b); }
  static f fma(f a, f b, f c) { return _mm512_fmadd_ps(a, b, c); }
  static f div(f a, f b) { return _mm512_div_ps(a, b); }
  static f min(f a, f b) { return _mm512_min_ps(a, b); }
  static f max(f a, f b) { return _mm512_max_ps(a, b); }
  static f round(f a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static f lt_select(f a, f b, f x, f y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x); }
  static f eq_select(f a, f b, f x, f y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ), y, x); }
  static f abs(f a) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff))); }
  static f pow2i(f n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  static f frexp(f x, f& e) {
    const __m512i bits = _mm512_castps_si512(x);
    e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(126)));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f000000)));
  }
  static f load_i8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
};

#include "mamba_simd.inc"

}  // namespace
}  // namespace avx512

void scan_tile_avx512(const ScanArgs& a, const float* Bf, const float* Cf, int64_t b, int64_t d0, int64_t width, float* scratch) {
  avx512::scan_tile(a, Bf, Cf, b, d0, width, scratch);
}
void conv_tile_avx512(const ConvArgs& a, int64_t b, int64_t d0, int64_t width, float* scratch) { avx512::conv_tile(a, b, d0, width, scratch); }
#pragma GCC pop_options

}  // namespace quantc::detail
