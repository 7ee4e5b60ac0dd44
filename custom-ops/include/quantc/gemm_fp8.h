// FireQ's INT4 x FP8 GEMM of ai.quantc.MatMulInt4Fp8 (CPU reference kernel; see custom-ops/README.md).
#pragma once

#include <cstdint>

namespace quantc {

// float8 e4m3fn: decoding a byte, and the value of fp8(x) (round to nearest even, saturating to +-448, as ONNX Cast
// with saturate = 1) as a signed count of 2^-9 (0 for NaN) (every e4m3fn value is an integer multiple of 2^-9, at most 229376 of them).
float fp8_e4m3fn_to_float(uint8_t b);
int32_t fp8_e4m3fn_units(float x);

// The largest K the exact sum is defined for: K * 229376^2 < 2^53.
constexpr int64_t kInt4Fp8MaxK = int64_t{1} << 16;

// y[m][n] = float(sum_k a[m][k] * b[n][k]) * 2^-18 * (s_m * 2^-t_exponent), where for each row m of x ([M, K]):
//   s_m = max(max_k |x[m][k]|, 1e-12) / 448, a[m][k] = fp8_units(x[m][k] / s_m),
// and b[n][k] = fp8_units(q[n][k] * scale[n][k / group_size]) with q the int4 of w (uint8 [N, ceil(K/2)], byte j of a row
// holds k = 2j in its low nibble and k = 2j + 1 in its high one, two's complement) and scale the float8 e4m3fn bytes
// w_scale ([N, K / group_size]). The sum is exact (integers below 2^53) and rounded to float32 once, so the result does
// not depend on the summation order; a row of x holding a NaN gives NaN. K % group_size == 0, K <= kInt4Fp8MaxK.
void matmul_int4_fp8(const float* x, const uint8_t* w, const uint8_t* w_scale, int64_t M, int64_t N, int64_t K, int64_t group_size,
                     int64_t t_exponent, float* y);

}  // namespace quantc
