// CUDA kernels of Hadamard and HadamardQuantizeInt8 (quantc/cuda_ops.h): the float operations of cpu/hadamard.cpp's
// hadamard_transform_rows in the same order, so the results equal the CPU's bit for bit.
//
// One block per row (a grid-stride loop over rows), the row in shared memory (dynamic, n floats). n = 2^k * m is split
// as hadamard_split does (the smallest supported m); the row is viewed as [m, 2^k]: the Sylvester butterflies of stages
// h = 1, 2, 4, ... (as the CPU's fwht: v[j] = a + b, v[j + h] = a - b) over each of the m segments, three stages per
// pass in registers, a __syncthreads between passes; then, for m > 1, the H_m mix y[a][b] = sum over c in order of
// ±u[c][b] (from 0, each term an FMA by ±1: one rounding, as the CPU's add), 4 output rows x 4 columns per thread,
// H_m's signs bit-packed in constant memory (uploaded once per device from quantc::hadamard_matrix) and read warp-uniformly; then the
// normalization (times 1/sqrt(n)) and the store (float, or the int8 quantization). The output goes straight to global
// memory from registers, after the whole row was read, so x and y may alias. A row that does not fit the device's
// shared memory per block throws std::invalid_argument.
#include <cuda_runtime.h>

#include <cmath>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernel_util.cuh"
#include "quantc/cuda_ops.h"
#include "quantc/hadamard.h"

namespace quantc::cuda {
namespace {

constexpr int kRowsPerThread = 4;  // H_m output rows a per thread in the mix (every supported m > 1 is a multiple of 4)
constexpr int kMaxWords = 4096;    // 32-bit words of all the packed H_m (3468 for the current orders)

// Bit c % 32 of word [off + a * W + c / 32] is set when H_m[a][c] = -1 (W = ceil(m / 32)).
__constant__ uint32_t c_hbits[kMaxWords];

struct Table {
  std::vector<uint32_t> words;
  std::vector<int> offset;  // offset[m] for each supported m
};

const Table& table() {
  static const Table t = [] {
    Table r;
    r.offset.assign(173, -1);
    for (int m : hadamard_orders()) {
      const std::vector<int8_t> h = hadamard_matrix(m);
      const int W = (m + 31) / 32;
      r.offset[m] = static_cast<int>(r.words.size());
      r.words.resize(r.words.size() + static_cast<size_t>(m) * W, 0u);
      for (int a = 0; a < m; ++a)
        for (int c = 0; c < m; ++c)
          if (h[static_cast<size_t>(a) * m + c] < 0) r.words[r.offset[m] + a * W + c / 32] |= 1u << (c % 32);
    }
    if (r.words.size() > kMaxWords) throw std::logic_error("Hadamard (CUDA): packed H_m tables exceed the constant buffer");
    return r;
  }();
  return t;
}

// Uploads the packed tables to the current device's constant memory once (per device, mutex-guarded).
cudaError_t ensure_tables() {
  static std::mutex mu;
  static std::vector<bool> done;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(mu);
  if (dev < static_cast<int>(done.size()) && done[dev]) return cudaSuccess;
  const Table& t = table();
  e = cudaMemcpyToSymbol(c_hbits, t.words.data(), t.words.size() * sizeof(uint32_t));
  if (e != cudaSuccess) return e;
  if (dev >= static_cast<int>(done.size())) done.resize(dev + 1, false);
  done[dev] = true;
  return cudaSuccess;
}

struct HadParams {
  const float* x;
  float* y;           // float output, or null
  int8_t* q;          // int8 output, or null
  const float* qscale;
  int64_t rows, n;
  int lp2, m, hoff, words;  // n = 2^lp2 * m; H_m's table offset and words per row
  float scale;         // 1/sqrt(n), or 1
  bool normalize;
};

__device__ __forceinline__ void store(const HadParams& p, int64_t i, float v, float qs) {
  if (p.normalize) v = __fmul_rn(v, p.scale);
  if (p.q) p.q[i] = detail::quantize_i8(v, qs);
  else p.y[i] = v;
}

// acc[r][q] += H_m[a0 + r][c] * u[c][b0 + q] for one c: fma(±1, v, acc) rounds acc ± v once, exactly the CPU's
// dst += src / dst -= src. Bit cc of w[r] is H_m[a0 + r][c]'s sign.
template <int Q>
__device__ __forceinline__ void mix_term(float (&acc)[kRowsPerThread][Q], const uint32_t (&w)[kRowsPerThread], int cc,
                                         const float* u) {
  float v[Q];
  if constexpr (Q == 4) {
    const float4 f = *reinterpret_cast<const float4*>(u);
    v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
  } else {
#pragma unroll
    for (int q = 0; q < Q; ++q) v[q] = u[q];
  }
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const float sign = __uint_as_float(0x3f800000u | ((w[r] >> cc) << 31));  // +1 or -1
#pragma unroll
    for (int q = 0; q < Q; ++q) acc[r][q] = __fmaf_rn(sign, v[q], acc[r][q]);
  }
}

// The H_m mix of the row in buf, y[a][b] = sum over c in order of ±u[c][b]: items of 4 output rows a x Q columns b
// (float4 loads when Q = 4); a warp's items share their rows (warp-uniform constant reads) when 2^lp2 >= 32 Q.
template <int Q>
__device__ __forceinline__ void mix(const HadParams& p, const float* buf, int lp2, int64_t base, float qs) {
  constexpr int lq = Q == 4 ? 2 : 0;
  const int lcols = lp2 - lq, items = (p.m / kRowsPerThread) << lcols;
  for (int it = threadIdx.x; it < items; it += blockDim.x) {
    const int a0 = (it >> lcols) * kRowsPerThread, b0 = (it & ((1 << lcols) - 1)) * Q;
    float acc[kRowsPerThread][Q];
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r)
#pragma unroll
      for (int q = 0; q < Q; ++q) acc[r][q] = 0.f;
    for (int c0 = 0; c0 < p.m; c0 += 32) {
      uint32_t w[kRowsPerThread];
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) w[r] = c_hbits[p.hoff + (a0 + r) * p.words + c0 / 32];
      const float* u = buf + (c0 << lp2) + b0;
      if (p.m - c0 >= 32) {
#pragma unroll 8
        for (int cc = 0; cc < 32; ++cc) mix_term<Q>(acc, w, cc, u + (cc << lp2));
      } else {
        for (int cc = 0; cc < p.m - c0; ++cc) mix_term<Q>(acc, w, cc, u + (cc << lp2));
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r)
#pragma unroll
      for (int q = 0; q < Q; ++q) store(p, base + ((a0 + r) << lp2) + b0 + q, acc[r][q], qs);
  }
}

// Stages h = 2^lh .. 2^(lh+S-1) of the butterflies (the CPU's v[j] = a + b, v[j + h] = a - b, stage by stage) in
// registers: group q of the n / 2^S holds the 2^S elements base + k * h that these stages mix, base = q with S zero
// bits inserted at bit lh. The segments (2^lp2 each, lh + S <= lp2) are contiguous, so the groups never straddle them.
template <int S>
__device__ __forceinline__ void fwht_pass(float* buf, int n, int lh, int tid, int nt) {
  constexpr int G = 1 << S;
  const int h = 1 << lh;
  for (int q = tid; q < n / G; q += nt) {
    const int base = ((q >> lh) << (lh + S)) + (q & (h - 1));
    float v[G];
#pragma unroll
    for (int k = 0; k < G; ++k) v[k] = buf[base + k * h];
#pragma unroll
    for (int hh = 1; hh < G; hh <<= 1)
#pragma unroll
      for (int k = 0; k < G; ++k)
        if ((k & hh) == 0) {
          const float a = v[k], b = v[k + hh];
          v[k] = __fadd_rn(a, b);
          v[k + hh] = __fsub_rn(a, b);
        }
#pragma unroll
    for (int k = 0; k < G; ++k) buf[base + k * h] = v[k];
  }
}

// Q = 0: m = 1 (no mix); Q = 4 or 1: the mix's columns per item (one instantiation each, so m = 1 keeps few registers).
template <int Q>
__global__ void hadamard_kernel(const HadParams p) {
  float* buf = detail::dynamic_smem<float>();
  // n fits the shared memory, so int indices; the segments are 2^lp2 long, their splits shifts and masks.
  const int tid = threadIdx.x, nt = blockDim.x, n = static_cast<int>(p.n), lp2 = p.lp2;
  const float qs = p.q ? *p.qscale : 1.f;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const float* xr = p.x + row * p.n;
    for (int i = tid; i < n; i += nt) buf[i] = xr[i];
    __syncthreads();
    // Sylvester butterflies over each of the m segments of length p2, S = 3 stages per pass (fewer in the last).
    for (int lh = 0; lh < lp2; lh += 3) {
      const int s = lp2 - lh < 3 ? lp2 - lh : 3;
      if (s == 3) fwht_pass<3>(buf, n, lh, tid, nt);
      else if (s == 2) fwht_pass<2>(buf, n, lh, tid, nt);
      else fwht_pass<1>(buf, n, lh, tid, nt);
      __syncthreads();
    }
    const int64_t base = row * p.n;
    if constexpr (Q == 0) {
      for (int i = tid; i < n; i += nt) store(p, base + i, buf[i], qs);
    } else {
      mix<Q>(p, buf, lp2, base, qs);
    }
    __syncthreads();  // the next row overwrites buf
  }
}

int run(HadParams p, const char* op, void* stream) {
  if (p.rows < 0) throw std::invalid_argument(std::string(op) + " (CUDA): negative row count");
  int64_t p2 = 0;
  int m = 0;
  if (!hadamard_split(p.n, &p2, &m))
    throw std::invalid_argument(std::string(op) + " (CUDA): size " + std::to_string(p.n) + " is not 2^k times a supported order");
  if (!p.x || (!p.y && !p.q) || (p.q && !p.qscale)) throw std::invalid_argument(std::string(op) + " (CUDA): null input or output");
  if (p.rows == 0) return 0;
  int dev = 0, smem_max = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return static_cast<int>(e);
  const size_t smem = static_cast<size_t>(p.n) * sizeof(float);
  if (smem > static_cast<size_t>(smem_max))
    throw std::invalid_argument(std::string(op) + " (CUDA): a row of " + std::to_string(p.n) + " floats exceeds the " +
                                std::to_string(smem_max) + " bytes of shared memory per block");
  if (m > 1 && (e = ensure_tables()) != cudaSuccess) return static_cast<int>(e);
  p.lp2 = 0;
  while ((int64_t{1} << p.lp2) < p2) ++p.lp2;
  p.m = m;
  p.hoff = m > 1 ? table().offset[m] : 0;
  p.words = (m + 31) / 32;
  p.scale = p.normalize ? 1.0f / std::sqrt(static_cast<float>(p.n)) : 1.0f;
  void (*kernel)(HadParams) = m == 1 ? hadamard_kernel<0> : p2 >= 4 ? hadamard_kernel<4> : hadamard_kernel<1>;
  if (smem > 48 * 1024 &&
      (e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem))) != cudaSuccess)
    return static_cast<int>(e);
  int threads = p.n >= 4096 ? 512 : p.n >= 1024 ? 256 : 128;
  if (m > 1) {  // the mix's items (4 rows x 4 columns) spread evenly: the block size that leaves the fewest threads idle
    const int64_t items = (m / kRowsPerThread) * (p2 >= 4 ? p2 / 4 : p2);
    double best = 0;
    for (int t : {512, 256, 128}) {
      const double used = double(items) / double((items + t - 1) / t * t);
      if (used > best + 1e-9) { best = used; threads = t; }
    }
  }
  const unsigned grid = static_cast<unsigned>(p.rows < (int64_t{1} << 30) ? p.rows : (int64_t{1} << 30));
  detail::launch(kernel, dim3(grid), dim3(threads), smem, static_cast<cudaStream_t>(stream), p);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int hadamard(const float* x, float* y, int64_t rows, int64_t n, bool normalize, void* stream) {
  HadParams p{};
  p.x = x;
  p.y = y;
  p.rows = rows;
  p.n = n;
  p.normalize = normalize;
  return run(p, "Hadamard", stream);
}

int hadamard_quantize_int8(const float* x, const float* scale, int8_t* y, int64_t rows, int64_t n, void* stream) {
  HadParams p{};
  p.x = x;
  p.q = y;
  p.qscale = scale;
  p.rows = rows;
  p.n = n;
  p.normalize = true;
  return run(p, "HadamardQuantizeInt8", stream);
}

}  // namespace quantc::cuda
