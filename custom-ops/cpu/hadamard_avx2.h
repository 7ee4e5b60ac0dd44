// The AVX2 row kernel of hadamard_transform_rows (cpu/hadamard_avx2.cpp); internal to the kernels.
#pragma once

#include <cstdint>

namespace quantc::detail {

// One row y = [m][p2] (p2 = 2^k >= 8) transformed in place: the fast Walsh-Hadamard transform of each of the m
// sub-vectors, then (m > 1) the mix with H_m, sign[a * m + c] = 0 or 0x80000000 (H_m[a][c] = +1 or -1), through tmp
// ([m][p2]), then times scale when normalize. The same float operations in the same order as the scalar path (each
// butterfly a + b, a - b; the mix summed from 0 over c = 0 .. m-1; x - y computed as x + (-y), which IEEE 754 defines
// as the same value), so the results are bit for bit the scalar path's.
void hadamard_row_avx2(float* y, int64_t p2, int m, const uint32_t* sign, float* tmp, float scale, bool normalize);

// The same row with the H_m mix on AVX-512 (16 floats per vector, fused multiply-adds by ±1): bit-identical to it; needs
// avx512f; sizes it does not cover (m = 1, or 2^k below 16) go to hadamard_row_avx2.
void hadamard_row_avx512(float* y, int64_t p2, int m, const uint32_t* sign, float* tmp, float scale, bool normalize);

}  // namespace quantc::detail
