// The SwiGLU of a fused gate/up projection's output (ai.quantc.SwiGluMatMulInt4Int8's last step).
#pragma once

#include <cstdint>

#include "quantc/gemm.h"  // Isa

namespace quantc {

// y[m, f] = silu(g) * u with g = x[m, gate * F + f], u = x[m, (1 - gate) * F + f] for x [M, 2F] and y [M, F] row-major,
// silu(g) = g / (1 + e^-g) (gate: 0 when the gate is the first half of each row, 1 when it is the second). Isa::Reference
// uses std::exp; the AVX2 (+FMA) and AVX-512 paths a polynomial e^x with a relative error of about 1e-7. Parallel over rows.
void swiglu(const float* x, int64_t M, int64_t F, int gate, float* y, Isa isa);

}  // namespace quantc
