// The GEMM paths through cuBLASLt (cuda/lt.cu). MatMulInt8: cuBLASLt's int8 tensor-core GEMM into int32, then quantc's
// epilogue y = float(acc) * (a_scale * b_scale[n]) + bias[n] (bit-exact with the CPU reference). MatMulInt4Fp8: the weight
// expanded once to float8 (int4_fp8_pack: fp8(q * scale), the CPU kernel's b), then per call the rows of x quantized to float8
// and cuBLASLt's FP8 GEMM (sm_89+) accumulating in float32 (not the CPU's exact sum: compared by relative norm).
// cuBLASLt is dlopen'ed at the first call (libcublasLt.so.13, .12, .11), so the custom-op library needs no CUDA library to load.
#pragma once
#include <cstdint>

namespace quantc::cuda {

// True when cuBLASLt could be loaded.
bool lt_int8_available();

// Returns cudaErrorNotSupported (801) where cuBLASLt is missing, offers no int8 algorithm for the shape, or the pointers are not
// aligned as it needs (the caller then runs its own GEMM); else the launches' cudaError_t. Device pointers; a_scale one float.
int matmul_int8_lt(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale, const float* bias, float* y, int64_t M,
                   int64_t N, int64_t K, void* stream);

// True when cuBLASLt was loaded and the device is sm_89 or newer (FP8 tensor cores).
bool lt_fp8_available();

// b [N, K] float8 e4m3fn bytes = fp8(int4 q[n][k] * fp8 w_scale[n][k / group_size]) (MatMulInt4Fp8's weight layout: two int4 per
// byte, low nibble first, [N, ceil(K/2)]). Pack once for a constant weight.
int int4_fp8_pack(const uint8_t* w, const uint8_t* w_scale, uint8_t* b, int64_t N, int64_t K, int64_t group_size, void* stream);

// y [M, N] = MatMulInt4Fp8(x, the packed b) with 2^-t_exponent; cudaErrorNotSupported (801) where cuBLASLt or FP8 is missing, K % 16,
// or b / y / scratch unaligned. scratch: matmul_fp8_lt_scratch_bytes(M, K), 256-byte aligned.
size_t matmul_fp8_lt_scratch_bytes(int64_t M, int64_t K);
int matmul_fp8_lt(const float* x, const uint8_t* b, float* y, int64_t M, int64_t N, int64_t K, int64_t t_exponent, void* scratch,
                  void* stream);

}  // namespace quantc::cuda
