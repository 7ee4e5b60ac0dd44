// MatMulInt8's prefill path through cuBLASLt (cuda/lt_int8.cu): cuBLASLt's int8 tensor-core GEMM into int32, then quantc's
// epilogue y = float(acc) * (a_scale * b_scale[n]) + bias[n] (bit-exact with the CPU reference). cuBLASLt is dlopen'ed at
// the first call (libcublasLt.so.13, .12, .11), so the custom-op library needs no CUDA library to load.
#pragma once
#include <cstdint>

namespace quantc::cuda {

// True when cuBLASLt could be loaded.
bool lt_int8_available();

// Returns cudaErrorNotSupported (801) where cuBLASLt is missing, offers no int8 algorithm for the shape, or the pointers are not
// aligned as it needs (the caller then runs its own GEMM); else the launches' cudaError_t. Device pointers; a_scale one float.
int matmul_int8_lt(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale, const float* bias, float* y, int64_t M,
                   int64_t N, int64_t K, void* stream);

}  // namespace quantc::cuda
