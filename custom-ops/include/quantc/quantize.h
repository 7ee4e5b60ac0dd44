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

}  // namespace quantc
