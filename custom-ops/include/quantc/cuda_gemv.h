// MatMulInt4Int8's decode GEMV, second design (cuda/gemv_int4.cu): 32 output channels per block, K in segments, the group sums'
// fold spread over the block's channels x rows. Bit-exact with quantc::matmul_int4_int8 (int8 A); row_scale (float A's per-token
// scales, or null) multiplies each row before the bias, as matmul_int4_f32_packed. Any M (slices of 8 rows); meant for M <= 8.
#pragma once
#include <cstdint>

namespace quantc::cuda {

int matmul_int4_int8_gemv2(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias,
                           const float* row_scale, float* y, int64_t M, int64_t N, int64_t K, int64_t group_size, void* stream);

// The same with float accumulation per lane and a warp reduction (not the CPU's in-order group fold: the float sums differ in
// rounding, compared by relative norm), a warp per 2 channels, no shared memory or barriers.
int matmul_int4_int8_gemv3(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias,
                           const float* row_scale, float* y, int64_t M, int64_t N, int64_t K, int64_t group_size, void* stream);

}  // namespace quantc::cuda
