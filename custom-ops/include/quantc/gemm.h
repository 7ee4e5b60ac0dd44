// Integer GEMM kernels of ai.quantc.MatMulInt8 (and, later, MatMulInt4Int8).
#pragma once

#include <cstdint>
#include <string>

namespace quantc {

// Which code path a kernel call takes.
enum class Isa { Reference, Avx2, Avx512Vnni };

// The best path this CPU supports (can be capped with QUANTC_ISA=reference|avx2|avx512vnni).
Isa best_isa();
const char* isa_name(Isa isa);

// y[m][n] = (sum_k a[m][k] * b[n][k]) * a_scale * b_scale[n] + (bias ? bias[n] : 0)
// a: int8 [M, K] row-major; b: int8 [N, K] (one row per output channel, i.e. the weight
// transposed so both operands run contiguously along K); int32 accumulation, exact.
void matmul_int8(const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K, float a_scale,
                 const float* b_scale, const float* bias, float* y, Isa isa);

// The int32 accumulators only (for exactness tests): acc[m][n] = sum_k a[m][k] * b[n][k].
void matmul_int8_accumulate(const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K, int32_t* acc, Isa isa);

// Runs fn(begin, end) over [0, count) split across threads (serially when the work is small).
void parallel_for(int64_t count, int64_t work_per_item, void (*fn)(void*, int64_t, int64_t), void* ctx);

}  // namespace quantc
