// MatMulInt8 on CUDA: y[m][n] = float(sum_k a[m][k] * b[n][k]) * (a_scale * b_scale[n]) + bias[n], equal to the CPU reference
// (quantc::matmul_int8) bit for bit: int32 sums are exact, and the epilogue rounds as the reference (__fmul_rn / __fadd_rn, no FMA).
// Paths: a tensor-core tile GEMM (mma.sync m16n8k32 s8, 128 x 128 x 64 tiles, 8 warps, 4-stage cp.async pipeline, ldmatrix),
// a memory-bound GEMV for M <= 8 (16-byte loads, __dp4a, warps split K, exact int32 reduction) and a one-thread-per-output
// simple kernel (the fallback for unaligned pointers, and the harness's plain check).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "gemm_common.cuh"
#include "quantc/cuda_gemm_paths.h"
#include "quantc/cuda_lt.h"
#include "quantc/cuda_ops.h"

namespace quantc::cuda {
namespace {

using namespace gemm;

__device__ __forceinline__ float epilogue(int32_t acc, float a_scale, const float* b_scale, const float* bias, int64_t n) {
  return __fadd_rn(__fmul_rn(__int2float_rn(acc), __fmul_rn(a_scale, b_scale[n])), bias ? bias[n] : 0.0f);
}

__global__ void simple_int8(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale, const float* bias, float* y,
                            int64_t M, int64_t N, int64_t K) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, m = blockIdx.y;
  if (n >= N || m >= M) return;
  const int8_t* ar = a + m * K;
  const int8_t* br = b + n * K;
  int32_t s = 0;
  for (int64_t k = 0; k < K; ++k) s += int32_t(ar[k]) * int32_t(br[k]);
  y[m * N + n] = epilogue(s, *a_scale, b_scale, bias, n);
}

// ---- GEMV: a block of 4 warps computes kGemvRows output channels for all MR rows of A; warp w takes the 512-byte windows
// w, w + 4, ... of K (each lane 16 bytes), the int32 sums are reduced exactly (shuffles, then shared memory across warps).
constexpr int kGemvRows = 4, kGemvWarps = 4;

template <int MR>
__global__ __launch_bounds__(kGemvWarps * 32) void gemv_int8(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale,
                                                               const float* bias, float* y, int64_t N, int64_t K) {
  __shared__ int32_t part[kGemvWarps][kGemvRows][MR];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n0 = int64_t(blockIdx.x) * kGemvRows;
  int32_t acc[kGemvRows][MR] = {};
  for (int64_t k = (int64_t(warp) * 32 + lane) * 16; k < K; k += kGemvWarps * 32 * 16) {
    int4 av[MR];
#pragma unroll
    for (int m = 0; m < MR; ++m) av[m] = __ldg(reinterpret_cast<const int4*>(a + m * K + k));
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r) {
      if (n0 + r >= N) break;
      const int4 bv = __ldg(reinterpret_cast<const int4*>(b + (n0 + r) * K + k));
#pragma unroll
      for (int m = 0; m < MR; ++m) {
        int s = acc[r][m];
        s = __dp4a(bv.x, av[m].x, s);
        s = __dp4a(bv.y, av[m].y, s);
        s = __dp4a(bv.z, av[m].z, s);
        s = __dp4a(bv.w, av[m].w, s);
        acc[r][m] = s;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kGemvRows; ++r)
#pragma unroll
    for (int m = 0; m < MR; ++m) {
      int s = acc[r][m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xFFFFFFFFu, s, o);
      if (lane == 0) part[warp][r][m] = s;
    }
  gemv_outputs<kGemvRows, MR>(n0, N, [&](int r, int m, int64_t n) {
    int32_t s = 0;
#pragma unroll
    for (int w = 0; w < kGemvWarps; ++w) s += part[w][r][m];
    y[int64_t(m) * N + n] = epilogue(s, *a_scale, b_scale, bias, n);
  });
}

// ---- the tile GEMM (kBM x kBN x 64 bytes, 8 warps of 64 x 32, kStages-deep cp.async pipeline) ----
constexpr int kStages = 4;
constexpr int kTileSmem = kStages * 2 * kTileBytes;

// One k-tile of A (rows m0..) and B (rows n0..) into a stage: 512 16-byte chunks per operand, 2 per thread; chunks past M, N or K
// are zero-filled (K % 16 == 0, so a chunk is wholly inside or outside).
__device__ __forceinline__ void load_tile_int8(uint8_t* sa, uint8_t* sb, const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K,
                                               int64_t m0, int64_t n0, int64_t k0, int tid) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = load_row(tid, i), c = load_chunk(tid, i);
    const int64_t k = k0 + c * 16;
    const bool ka = k < K;
    const bool va = ka && m0 + r < M, vb = ka && n0 + r < N;
    cp_async16(sa + swz(r, c), a + (va ? (m0 + r) * K + k : 0), va ? 16 : 0);
    cp_async16(sb + swz(r, c), b + (vb ? (n0 + r) * K + k : 0), vb ? 16 : 0);
  }
}

__global__ __launch_bounds__(kThreads) void tile_int8(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale,
                                                       const float* bias, float* y, int64_t M, int64_t N, int64_t K) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int row0 = (warp >> 2) * 64, col0 = (warp & 3) * 32;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int kt_count = static_cast<int>((K + kBKBytes - 1) / kBKBytes);
  auto stage_a = [&](int s) { return smem + s * 2 * kTileBytes; };
  auto stage_b = [&](int s) { return smem + s * 2 * kTileBytes + kTileBytes; };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < kt_count) load_tile_int8(stage_a(s), stage_b(s), a, b, M, N, K, m0, n0, int64_t(s) * kBKBytes, tid);
    cp_async_commit();
  }
  int32_t acc[4][4][4] = {};
  for (int kt = 0; kt < kt_count; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    const int pre = kt + kStages - 1;
    if (pre < kt_count)
      load_tile_int8(stage_a(pre % kStages), stage_b(pre % kStages), a, b, M, N, K, m0, n0, int64_t(pre) * kBKBytes, tid);
    cp_async_commit();
    const uint8_t* ta = stage_a(kt % kStages);
    const uint8_t* tb = stage_b(kt % kStages);
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      uint32_t af[4][4], bf[4][2];
      load_a_frags(af, ta, row0, ks, lane);
      load_b_frags(bf, tb, col0, ks, lane);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_s8(acc[i][j], af[i], bf[j][0], bf[j][1]);
    }
  }
  cp_async_wait<0>();

  const float sa = *a_scale;
  for_each_acc(lane, [&](int i, int j, int q, int r, int c) {
    const int64_t m = m0 + row0 + r, n = n0 + col0 + c;
    if (m < M && n < N) y[m * N + n] = epilogue(acc[i][j][q], sa, b_scale, bias, n);
  });
}

// GEMV over M rows in slices of up to 8 (the kernel is instantiated per row count).
cudaError_t gemv(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale, const float* bias, float* y, int64_t M,
                 int64_t N, int64_t K, cudaStream_t st) {
  return for_row_slices(M, [&](auto mr, int64_t m0) {
    gemv_int8<decltype(mr)::value><<<blocks_for(N, kGemvRows), kGemvWarps * 32, 0, st>>>(a + m0 * K, a_scale, b, b_scale, bias, y + m0 * N,
                                                                                          N, K);
    return cudaSuccess;
  });
}

cudaError_t tile(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale, const float* bias, float* y, int64_t M,
                 int64_t N, int64_t K, cudaStream_t st) {
  // Set on each call: the attribute belongs to the current device's context (another device, or a reset context, lacks it).
  const cudaError_t attr = cudaFuncSetAttribute(tile_int8, cudaFuncAttributeMaxDynamicSharedMemorySize, kTileSmem);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(blocks_for(N, kBN), blocks_for(M, kBM));
  if (grid.y > 65535) return cudaErrorInvalidConfiguration;
  tile_int8<<<grid, kThreads, kTileSmem, st>>>(a, a_scale, b, b_scale, bias, y, M, N, K);
  return cudaSuccess;
}

}  // namespace

const char* gemm_path_name(GemmPath p) {
  switch (p) {
    case GemmPath::Simple: return "simple";
    case GemmPath::Gemv: return "gemv";
    case GemmPath::Tile: return "tile";
    case GemmPath::GemvSeg: return "gemv seg";
    case GemmPath::GemvFloat: return "gemv float";
    case GemmPath::Lt: return "cuBLASLt";
    default: return "auto";
  }
}

int matmul_int8_path(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale, const float* bias, float* y,
                     int64_t M, int64_t N, int64_t K, GemmPath path, void* stream) {
  if (M < 0 || N < 0 || K < 0) throw std::invalid_argument("MatMulInt8: negative dimension");
  if (K % 16) throw std::invalid_argument("MatMulInt8 (CUDA) needs K % 16 == 0");
  if (M == 0 || N == 0) return 0;
  if (!a || !a_scale || !b || !b_scale || !y) throw std::invalid_argument("MatMulInt8: null input or output");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const bool aligned = aligned16(a) && aligned16(b);
  if (path == GemmPath::Auto && aligned && M > 8) {
    const int rc = matmul_int8_lt(a, a_scale, b, b_scale, bias, y, M, N, K, stream);
    if (rc != cudaErrorNotSupported) return rc;
  }
  if (path == GemmPath::Lt) return matmul_int8_lt(a, a_scale, b, b_scale, bias, y, M, N, K, stream);
  if (path == GemmPath::Auto) path = !aligned ? GemmPath::Simple : M <= 8 ? GemmPath::Gemv : GemmPath::Tile;
  if (path != GemmPath::Simple && path != GemmPath::Gemv && path != GemmPath::Tile)
    throw std::invalid_argument(std::string("MatMulInt8 has no path ") + gemm_path_name(path));
  if (path != GemmPath::Simple && !aligned) throw std::invalid_argument("MatMulInt8: the GEMV and tile paths need 16-byte aligned A and B");
  if (path == GemmPath::Simple) {
    if (M > 65535) throw std::invalid_argument("MatMulInt8: the simple path takes M <= 65535");
    simple_int8<<<dim3(blocks_for(N, 128), unsigned(M)), 128, 0, st>>>(a, a_scale, b, b_scale, bias, y, M, N, K);
  } else if (path == GemmPath::Gemv) {
    const cudaError_t e = gemv(a, a_scale, b, b_scale, bias, y, M, N, K, st);
    if (e != cudaSuccess) return e;
  } else {
    const cudaError_t e = tile(a, a_scale, b, b_scale, bias, y, M, N, K, st);
    if (e != cudaSuccess) return e;
  }
  return cudaGetLastError();
}

int matmul_int8(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale, const float* bias, float* y, int64_t M,
                int64_t N, int64_t K, void* stream) {
  return matmul_int8_path(a, a_scale, b, b_scale, bias, y, M, N, K, GemmPath::Auto, stream);
}

}  // namespace quantc::cuda
