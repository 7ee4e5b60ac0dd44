// A host stand-in for <cuda_runtime.h>, just enough to compile custom-ops/cuda/{mamba,hadamard}.cu as C++ and run their
// kernels on CPU threads (one std::thread per CUDA thread, the blocks one after another, __syncthreads a barrier,
// shuffles through a per-block exchange array). It checks the kernels' index arithmetic and barriers against the CPU
// kernels without a GPU (emulate.cpp); it says nothing about speed, and device memory is plain host memory.
#pragma once
#define QUANTC_CUDA_EMULATION 1

#include <barrier>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <math.h>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 { unsigned x = 0, y = 0, z = 0; };
struct float4 { float x, y, z, w; };
using cudaStream_t = struct CUstream_st*;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace emu {
inline thread_local uint3 tid, bid;
inline thread_local dim3 bdim, gdim;
inline std::barrier<>* bar = nullptr;
inline std::vector<float> xch;                    // shuffle exchange, one float per thread of the block
inline std::vector<float4> dyn(1 << 16);          // dynamic shared memory (1 MiB)
}  // namespace emu

#define threadIdx (emu::tid)
#define blockIdx (emu::bid)
#define blockDim (emu::bdim)
#define gridDim (emu::gdim)

inline void __syncthreads() { emu::bar->arrive_and_wait(); }
// Every thread of the block calls it together (as the kernels do): write, wait, read the partner, wait.
inline float __shfl_xor_sync(unsigned, float v, int o, int width = 32) {
  const unsigned t = emu::tid.x;
  emu::xch[t] = v;
  emu::bar->arrive_and_wait();
  const unsigned lane = t % 32, src = (t - lane) + ((lane ^ unsigned(o)) % 32);
  const float r = (lane / width == (lane ^ unsigned(o)) / width) ? emu::xch[src] : v;
  emu::bar->arrive_and_wait();
  return r;
}
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline int __float2int_rn(float v) {
  if (std::isnan(v)) return INT32_MIN;
  const float r = std::nearbyint(v);
  return r >= 2147483648.f ? INT32_MAX : r < -2147483648.f ? INT32_MIN : static_cast<int>(r);
}
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }



// Device memory is host memory; copies are memcpy; events read a steady clock (the harness's timing code runs, its
// figures mean nothing).
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
using cudaEvent_t = double*;
inline cudaError_t cudaMalloc(void* p, size_t bytes) {
  *static_cast<void**>(p) = std::malloc(bytes);
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k, cudaStream_t = nullptr) {
  return cudaMemcpy(d, s, n, k);
}
inline cudaError_t cudaMemset(void* d, int v, size_t n) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new double(0); return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = nullptr) {
  *e = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) { *ms = float(*b - *a); return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated"; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) { *v = 227 * 1024; return cudaSuccess; }
template <typename K>
cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int) { return cudaSuccess; }
template <typename T, size_t N>
cudaError_t cudaMemcpyToSymbol(T (&sym)[N], const void* src, size_t bytes) {
  if (bytes > sizeof(sym)) return cudaErrorInvalidValue;
  std::memcpy(sym, src, bytes);
  return cudaSuccess;
}

namespace quantc::cuda::detail {
// The blocks in order; each block's threads on std::threads with a barrier.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t, cudaStream_t, const A&... args) {
  const unsigned nt = block.x * block.y * block.z;
  std::barrier<> b(nt);
  emu::bar = &b;
  emu::xch.assign(nt, 0.f);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::vector<std::thread> th;
        for (unsigned t = 0; t < nt; ++t)
          th.emplace_back([&, t] {
            emu::tid = {t, 0, 0};
            emu::bid = {bx, by, bz};
            emu::bdim = block;
            emu::gdim = grid;
            kernel(args...);
          });
        for (auto& x : th) x.join();
      }
}
template <typename T>
inline T* dynamic_smem() { return reinterpret_cast<T*>(emu::dyn.data()); }
}  // namespace quantc::cuda::detail
