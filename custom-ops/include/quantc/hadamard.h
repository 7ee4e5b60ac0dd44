// Hadamard matrices and the fast Walsh-Hadamard transform used by ai.quantc.Hadamard.
//
// Sizes n = 2^k * m, m in {1, 12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 156, 172}. H_n = H_m (x) H_{2^k}
// (Kronecker product): with n-index i = a * 2^k + b, H_n[i][j] = H_m[a][c] * H_{2^k}[b][d].
// The m x m matrices are built by Paley's constructions, or for 156 and 172 by the Goethals-Seidel
// array over four searched circulants (see hadamard.cpp); quantc's C# side
// builds exactly the same matrices (Quantc.Core.Numerics.Hadamard), and tests check both agree.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "quantc/gemm.h"  // Isa, parallel_for

namespace quantc {

// The m x m Hadamard matrix (entries +1/-1, row-major), for m = 1 or one of the supported
// non-power-of-two orders; empty when m is not supported.
std::vector<int8_t> hadamard_matrix(int m);

// Splits n = 2^k * m with m supported (the smallest such m); returns false when none exists.
bool hadamard_split(int64_t n, int64_t* pow2, int* m);

// The supported non-power-of-two orders.
const std::vector<int>& hadamard_orders();

// y = H_n x / sqrt(n) (normalize) or H_n x, for each of `rows` contiguous vectors of length n, the rows split across
// threads (parallel_for), on the best path. x and y may alias. Throws std::invalid_argument for unsupported n.
void hadamard_transform(const float* x, float* y, int64_t rows, int64_t n, bool normalize);

// The same on the calling thread only. Isa::Reference: scalar butterflies and the H_m mix; Isa::Avx2 and up, when
// 2^k >= 8: the vectorised row kernel (cpu/hadamard_avx2.cpp), the same float operations in the same order, so
// bit-identical results.
void hadamard_transform_rows(const float* x, float* y, int64_t rows, int64_t n, bool normalize, Isa isa);

// Reference: dense matrix-vector product with the explicit H_n (for tests).
void hadamard_transform_reference(const float* x, float* y, int64_t rows, int64_t n, bool normalize);

}  // namespace quantc
