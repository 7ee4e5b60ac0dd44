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

#include "simd_v_avx2.inc"

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

#include "simd_v_avx512.inc"

#include "mamba_simd.inc"

}  // namespace
}  // namespace avx512

void scan_tile_avx512(const ScanArgs& a, const float* Bf, const float* Cf, int64_t b, int64_t d0, int64_t width, float* scratch) {
  avx512::scan_tile(a, Bf, Cf, b, d0, width, scratch);
}
void conv_tile_avx512(const ConvArgs& a, int64_t b, int64_t d0, int64_t width, float* scratch) { avx512::conv_tile(a, b, d0, width, scratch); }
#pragma GCC pop_options

}  // namespace quantc::detail
