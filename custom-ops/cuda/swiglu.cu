// CUDA kernel of SwiGluMatMulInt4Int8's last step (quantc/cuda_ops.h swiglu): y[m][f] = silu(g) * u for the [rows, 2F] product
// of the fused gate/up projection, as cpu/swiglu.cpp computes it (g / (1 + e^-g) * u; expf here, so equal to float rounding).
// One thread per output element in a grid-stride loop; memory-bound.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernel_util.cuh"
#include "quantc/cuda_ops.h"

namespace quantc::cuda {
namespace {

struct SwiGluParams {
  const float* x;
  float* y;
  int64_t rows, F;
  int gate;
};

__global__ void swiglu_kernel(const SwiGluParams p) {
  const int64_t total = p.rows * p.F, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t m = i / p.F, f = i % p.F;
    const float g = p.x[m * 2 * p.F + p.gate * p.F + f], u = p.x[m * 2 * p.F + (1 - p.gate) * p.F + f];
    p.y[i] = g / (1.0f + expf(-g)) * u;
  }
}

}  // namespace

int swiglu(const float* x, float* y, int64_t rows, int64_t F, int gate, void* stream) {
  const std::string op = "SwiGluMatMulInt4Int8 (CUDA)";
  if (rows < 0 || F < 0) throw std::invalid_argument(op + ": negative size");
  if (gate != 0 && gate != 1) throw std::invalid_argument(op + ": gate must be 0 or 1, got " + std::to_string(gate));
  if (rows * F > 0 && (!x || !y)) throw std::invalid_argument(op + ": null input or output");
  if (rows == 0 || F == 0) return 0;
  const SwiGluParams p{x, y, rows, F, gate};
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((rows * F + kThreads - 1) / kThreads, int64_t{1} << 20);
  detail::launch(swiglu_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, static_cast<cudaStream_t>(stream), p);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace quantc::cuda
