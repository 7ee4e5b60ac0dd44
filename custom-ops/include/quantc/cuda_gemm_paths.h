// The CUDA GEMMs of cuda_ops.h with their code path chosen by the caller (the harness checks each path on its own, so a
// bug in a fast path still leaves the plain one measured). cuda_ops.h's functions are these with GemmPath::Auto.
#pragma once
#include <cstdint>

namespace quantc::cuda {

enum class GemmPath {
  Auto,       // the measured best (H200, custom-ops/README.md): MatMulInt8 GEMV for M <= 8, else cuBLASLt (the tile GEMM where it
              // is missing); MatMulInt4Int8 GemvFloat for M <= 8, else the tile GEMM; the simple kernel for unaligned pointers
  Simple,     // one thread per output, scalar loads (no alignment needs): the plain fallback
  Gemv,       // the memory-bound kernel (any M, meant for M <= 8)
  Tile,       // the tensor-core tile GEMM (mma.sync, cp.async pipeline)
  GemvSeg,    // MatMulInt4Int8: cuda/gemv_int4.cu's segmented GEMV (in-order group fold, bit-exact)
  GemvFloat,  // MatMulInt4Int8: cuda/gemv_int4.cu's float-sum GEMV (relative norm, the fastest decode path measured)
  Lt,         // MatMulInt8: cuBLASLt int8 + quantc's epilogue (bit-exact); cudaErrorNotSupported where cuBLASLt cannot
};

const char* gemm_path_name(GemmPath p);

int matmul_int8_path(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale, const float* bias, float* y,
                     int64_t M, int64_t N, int64_t K, GemmPath path, void* stream);

int matmul_int4_int8_path(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias,
                          float* y, int64_t M, int64_t N, int64_t K, int64_t group_size, GemmPath path, void* stream);

int matmul_int4_f32_path(const float* x, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, float* y,
                         int64_t M, int64_t N, int64_t K, int64_t group_size, void* scratch, GemmPath path, void* stream);

// MatMulInt4Fp8: Simple (one thread per output, exact double sums), Gemv (a warp per channel, fp32 sums) or Tile (fp16 mma.sync);
// Auto = Gemv for M <= 8, else Tile (Simple where the scratch is not 16-byte aligned).
int matmul_int4_fp8_path(const float* x, const uint8_t* w, const uint8_t* w_scale, float* y, int64_t M, int64_t N, int64_t K,
                         int64_t group_size, int64_t t_exponent, void* scratch, GemmPath path, void* stream);

}  // namespace quantc::cuda
