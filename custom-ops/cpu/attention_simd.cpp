// The AVX2 (+FMA) and AVX-512 instantiations of the causal-attention tiles (cpu/attention_simd.inc): the float tile, and the
// int8 mode's tile (AVX-512 with VNNI's vpdpbusd; AVX2 summing the same integers in float).
// GCC 12's AVX-512 headers trip -Wuninitialized on their own temporaries (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "attention_impl.h"

namespace quantc::detail {

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define QUANTC_ATTN_VNNI 0
#define QUANTC_ATTN_FLOAT 1
namespace attn_avx2 { namespace {
#include "simd_v_avx2.inc"
#include "attention_simd.inc"
} }  // namespace attn_avx2
#undef QUANTC_ATTN_VNNI
#undef QUANTC_ATTN_FLOAT
#pragma GCC pop_options

// AVX2 with AVX-VNNI (vpdpbusd on ymm, e.g. Intel cores since Alder Lake without AVX-512): the int8 mode only.
#pragma GCC push_options
#pragma GCC target("avx2,fma,avxvnni")
#define QUANTC_ATTN_VNNI 256
#define QUANTC_ATTN_FLOAT 0
namespace attn_avxvnni { namespace {
#include "simd_v_avx2.inc"
#include "attention_simd.inc"
} }  // namespace attn_avxvnni
#undef QUANTC_ATTN_VNNI
#undef QUANTC_ATTN_FLOAT
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vnni")
#define QUANTC_ATTN_VNNI 512
#define QUANTC_ATTN_FLOAT 1
namespace attn_avx512 { namespace {
#include "simd_v_avx512.inc"
#include "attention_simd.inc"
} }  // namespace attn_avx512
#undef QUANTC_ATTN_VNNI
#undef QUANTC_ATTN_FLOAT
#pragma GCC pop_options

// Plain entry points (the tiles carry their ISA's target attribute and are never inlined into these).
int64_t attention_tile_avx2(const AttentionJob& j, int64_t b, int64_t kvh, int64_t i0, int64_t n, float* scratch, int64_t* empty) {
  return attn_avx2::tile(j, b, kvh, i0, n, scratch, empty);
}
int64_t attention_tile_avx512(const AttentionJob& j, int64_t b, int64_t kvh, int64_t i0, int64_t n, float* scratch, int64_t* empty) {
  return attn_avx512::tile(j, b, kvh, i0, n, scratch, empty);
}

int64_t attention_tile_q8_avx2(const AttentionJob& j, int64_t b, int64_t kvh, int64_t i0, int64_t n, float* scratch, int64_t* empty) {
  return attn_avx2::tile_q8(j, b, kvh, i0, n, scratch, empty);
}
int64_t attention_tile_q8_vnni(const AttentionJob& j, int64_t b, int64_t kvh, int64_t i0, int64_t n, float* scratch, int64_t* empty) {
  return attn_avx512::tile_q8(j, b, kvh, i0, n, scratch, empty);
}
void attention_quantize_kv_avx2(const float* k, const float* v, int64_t T, int64_t Tp, int64_t D, float scale, float* kscale,
                                float* vscale, float* kt, float* vq, float* row) {
  attn_avx2::quantize_kv(k, v, T, Tp, D, scale, kscale, vscale, kt, vq, row);
}
int64_t attention_tile_q8_avxvnni(const AttentionJob& j, int64_t b, int64_t kvh, int64_t i0, int64_t n, float* scratch, int64_t* empty) {
  return attn_avxvnni::tile_q8(j, b, kvh, i0, n, scratch, empty);
}
void attention_quantize_kv_avxvnni(const float* k, const float* v, int64_t T, int64_t Tp, int64_t D, float scale, float* kscale,
                                   float* vscale, int32_t* ksum, int8_t* k8, int8_t* v8, int32_t* work) {
  attn_avxvnni::quantize_kv(k, v, T, Tp, D, scale, kscale, vscale, ksum, k8, v8, work);
}
void attention_quantize_kv_vnni(const float* k, const float* v, int64_t T, int64_t Tp, int64_t D, float scale, float* kscale,
                                float* vscale, int32_t* ksum, int8_t* k8, int8_t* v8, int32_t* work) {
  attn_avx512::quantize_kv(k, v, T, Tp, D, scale, kscale, vscale, ksum, k8, v8, work);
}

}  // namespace quantc::detail
