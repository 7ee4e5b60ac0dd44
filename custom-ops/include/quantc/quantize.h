// Static per-tensor int8 quantization, y = saturate(round_half_even(x / scale)), and the fused
// Hadamard + quantization of ai.quantc.HadamardQuantizeInt8.
#pragma once

#include <cstdint>

#include "quantc/gemm.h"  // Isa

namespace quantc {

// y[i] = saturate_int8(round_half_even(x[i] / scale)) (x[i] / scale a true division). Isa::Avx2
// and up vectorise it; every path gives the same bytes.
void quantize_int8(const float* x, int64_t count, float scale, int8_t* y, Isa isa);

// y = quantize_int8(H_n x / sqrt(n), scale) for each of `rows` contiguous vectors of length n, split
// over threads by rows. Throws std::invalid_argument for unsupported n (as hadamard_transform).
void hadamard_quantize_int8(const float* x, int8_t* y, int64_t rows, int64_t n, float scale);

// The per-token dynamic int8 scale of one row of K floats, as lower_w4a8's graph computes it
// (Abs, ReduceMax, Max with 1e-12, Div by 127): max(max_k |x[k]|, 1e-12f) / 127.f. NaN when the row holds a NaN.
float row_scale_int8(const float* x, int64_t K, Isa isa);

// Per-token dynamic int8 of x [M, K]: s[m] = row_scale_int8(row m), q[m][k] = quantize_int8(x[m][k], s[m]) (a true
// division, round half to even, saturate). Every path gives the same bytes and scales.
void quantize_rows_int8(const float* x, int64_t M, int64_t K, int8_t* q, float* s, Isa isa);

// quantize_int8 of count values split over threads (parallel_for) in blocks, on the best path: the same bytes.
void quantize_int8_parallel(const float* x, int64_t count, float scale, int8_t* y);

}  // namespace quantc
