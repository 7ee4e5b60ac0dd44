// Device helpers shared by the quantc CUDA kernels (mamba.cu, hadamard.cu): the CPU kernels' roundings on the GPU.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace quantc::cuda::detail {

#ifndef QUANTC_CUDA_EMULATION
// kernel<<<grid, block, smem, stream>>>(args...); the host emulation of tests/cuda_emulation runs the blocks on threads.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const A&... args) {
  kernel<<<grid, block, smem, stream>>>(args...);
}

// The block's dynamic shared memory (the launch's smem bytes).
template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ float4 qc_dynamic_smem[];
  return reinterpret_cast<T*>(qc_dynamic_smem);
}
#endif

// saturate(round_half_even(v / scale)) as quantize_int8 (cpu/quantize.cpp): a true division, then round to nearest
// even (the int conversion saturates, a NaN gives INT_MIN), then clamp to [-128, 127].
__device__ __forceinline__ int8_t quantize_i8(float v, float scale) {
  const int r = __float2int_rn(__fdiv_rn(v, scale));
  return static_cast<int8_t>(r > 127 ? 127 : r < -128 ? -128 : r);
}

// The CPU kernels' SiLU and softplus, with the accurate expf / log1pf (not __expf) and an IEEE division.
__device__ __forceinline__ float silu(float v) { return __fdiv_rn(v, __fadd_rn(1.f, expf(-v))); }
__device__ __forceinline__ float softplus(float v) { return v > 20.f ? v : log1pf(expf(v)); }

}  // namespace quantc::cuda::detail
