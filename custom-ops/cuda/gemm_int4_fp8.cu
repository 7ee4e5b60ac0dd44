// MatMulInt4Fp8 on CUDA (quantc/gemm_fp8.h): x quantized per row to float8 e4m3fn (s_m = max(max|x|, 1e-12) / 448, a true
// division, round to nearest even, saturating), b = fp8(q * scale) per weight element; y = (sum_k a b) * s_m * 2^-t_exponent.
// Every e4m3fn value is exact in fp16 and the products of two are exact in fp32, so the tile path runs an fp16 tensor-core GEMM
// (mma.sync m16n8k16, fp32 accumulation: compared by relative norm); the GEMV (M <= 8) a warp per channel with fp32 lane sums
// (relative norm too); the simple path sums the same products in double per output (exact: the CPU reference bit for bit).
// The activations go to the scratch as fp16 rows padded to 32 k's with zeros.
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "gemm_common.cuh"
#include "quantc/cuda_gemm_paths.h"
#include "quantc/cuda_ops.h"
#include "quantc/gemm_fp8.h"

namespace quantc::cuda {
namespace {

using namespace gemm;

constexpr int kKTile = 32;  // fp16 k's per 64-byte k-tile row
constexpr int kQuantThreads = 256;

inline int64_t padded_k(int64_t K) { return (K + kKTile - 1) / kKTile * kKTile; }

// fp8 e4m3fn (round to nearest even, saturating to +-448) of v, as fp16 bits; NaN gives 0 (as the CPU's fp8_e4m3fn_units).
__device__ __forceinline__ uint16_t fp8_as_half(float v) {
  if (isnan(v)) return 0;
  const __nv_fp8_storage_t b = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  return __nv_cvt_fp8_to_halfraw(b, __NV_E4M3).x;
}

__device__ __forceinline__ float fp8_to_float(uint8_t b) { return __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3))); }

// One block per row: s[m] (NaN when the row holds a NaN), a16[m][k] = fp8(x / s[m]) as fp16, zeros for K <= k < Kp.
__global__ __launch_bounds__(kQuantThreads) void quantize_rows_fp8(const float* x, uint16_t* a16, float* s, int64_t K, int64_t Kp) {
  const int64_t m = blockIdx.x;
  const float* xr = x + m * K;
  // A row holding a NaN: s[m] = NaN, its values x / NaN turn to 0 (as the CPU's units of a NaN), its outputs are NaN through s[m].
  const float sc = block_row_scale<kQuantThreads>(xr, K, 448.0f);
  if (threadIdx.x == 0) s[m] = sc;
  for (int64_t k = threadIdx.x; k < Kp; k += kQuantThreads) a16[m * Kp + k] = k < K ? fp8_as_half(__fdiv_rn(xr[k], sc)) : 0;
}

// The weight element (n, k) as fp16 bits: fp8(q * scale[n][k / G]).
__device__ __forceinline__ uint16_t weight_half(uint8_t byte, int64_t k, float scale) {
  const int v = (k & 1) ? byte >> 4 : byte & 0xF;
  return fp8_as_half(float(v >= 8 ? v - 16 : v) * scale);
}

__global__ void simple_fp8(const uint16_t* a16, const float* s, const uint8_t* w, const uint8_t* w_scale, float* y, int64_t M, int64_t N,
                           int64_t K, int64_t Kp, int64_t G, float inv_t) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, m = blockIdx.y;
  if (n >= N || m >= M) return;
  const int64_t row_bytes = (K + 1) / 2, groups = K / G;
  const uint8_t* wr = w + n * row_bytes;
  double acc = 0.0;  // products of two e4m3 values are multiples of 2^-18 below 2^18: the double sum is exact for K <= 65536
  for (int64_t g = 0; g < groups; ++g) {
    const float sc = fp8_to_float(w_scale[n * groups + g]);
    for (int64_t k = g * G; k < (g + 1) * G; ++k) {
      const float b = __half2float(__ushort_as_half(weight_half(wr[k >> 1], k, sc)));
      const float a = __half2float(__ushort_as_half(a16[m * Kp + k]));
      acc += double(__fmul_rn(a, b));
    }
  }
  y[m * N + n] = __fmul_rn(__double2float_rn(acc), __fmul_rn(s[m], inv_t));
}

// ---- GEMV (M <= 8, instantiated per row count): a warp per output channel, the groups in order, the lanes over each group's
// k's (byte loads, coalesced), fp32 partial sums per lane reduced by shuffles (compared by relative norm, like the tile path).
constexpr int kGemvWarps = 4;

template <int MR>
__global__ __launch_bounds__(kGemvWarps * 32) void gemv_fp8(const uint16_t* a16, const float* s, const uint8_t* w, const uint8_t* w_scale,
                                                              float* y, int64_t N, int64_t K, int64_t Kp, int64_t G, float inv_t) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (n >= N) return;  // whole warps; no block-wide barrier below
  const int64_t groups = K / G;
  const uint8_t* wr = w + n * ((K + 1) / 2);
  float acc[MR] = {};
  for (int64_t g = 0; g < groups; ++g) {
    const float sc = fp8_to_float(__ldg(w_scale + n * groups + g));
    for (int64_t k = g * G + lane; k < (g + 1) * G; k += 32) {
      const float b = __half2float(__ushort_as_half(weight_half(__ldg(wr + (k >> 1)), k, sc)));
#pragma unroll
      for (int m = 0; m < MR; ++m) acc[m] = fmaf(__half2float(__ushort_as_half(__ldg(a16 + m * Kp + k))), b, acc[m]);
    }
  }
#pragma unroll
  for (int m = 0; m < MR; ++m) {
    float v = acc[m];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    if (lane == 0) y[int64_t(m) * N + n] = __fmul_rn(v, __fmul_rn(s[m], inv_t));
  }
}

// ---- the tile GEMM: fp16 k-tiles of 32 k's (64 bytes per row, the int8 GEMMs' swizzled geometry), 8 warps of 64 x 32,
// two stages: A by cp.async, the weight through registers (loaded one k-tile ahead, converted to fp16 into the next stage).
struct WeightRegs {
  uint8_t bytes[8];  // k0 .. k0 + 15 of one channel
};

__device__ __forceinline__ void load_weight(WeightRegs& r, const uint8_t* w, int64_t N, int64_t K, int64_t n, int64_t k0) {
  const int64_t row_bytes = (K + 1) / 2;
  const uint8_t* p = w + n * row_bytes + k0 / 2;
  if (n < N && k0 + 16 <= K && (reinterpret_cast<uintptr_t>(p) & 7) == 0) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    memcpy(r.bytes, &v, 8);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) r.bytes[i] = n < N && k0 + 2 * i < K ? __ldg(p + i) : 0;
  }
}

// The 16 k's as fp16 into chunks 2 h and 2 h + 1 of row r of the B tile (k >= K gives 0).
__device__ __forceinline__ void store_weight(uint8_t* tile, const WeightRegs& wr, const uint8_t* w_scale, int64_t N, int64_t K, int64_t G,
                                             int64_t n, int64_t k0, int r, int h) {
  uint32_t packed[8];
  const int64_t groups = K / G;
  int64_t g_last = -1;
  float sc = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    uint16_t lo = 0, hi = 0;
    const int64_t k = k0 + 2 * i;
    if (n < N && k < K) {
      const int64_t g = k / G;
      if (g != g_last) { sc = fp8_to_float(__ldg(w_scale + n * groups + g)); g_last = g; }
      lo = weight_half(wr.bytes[i], k, sc);
      if (k + 1 < K) {
        const int64_t g1 = (k + 1) / G;
        const float sc1 = g1 == g ? sc : fp8_to_float(__ldg(w_scale + n * groups + g1));
        hi = weight_half(wr.bytes[i], k + 1, sc1);
      }
    }
    packed[i] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
  *reinterpret_cast<uint4*>(tile + swz(r, 2 * h)) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
  *reinterpret_cast<uint4*>(tile + swz(r, 2 * h + 1)) = make_uint4(packed[4], packed[5], packed[6], packed[7]);
}

__device__ __forceinline__ void load_a16(uint8_t* sa, const uint16_t* a16, int64_t M, int64_t Kp, int64_t m0, int64_t k0, int tid) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = load_row(tid, i), c = load_chunk(tid, i);
    const bool va = m0 + r < M;
    cp_async16(sa + swz(r, c), a16 + (va ? (m0 + r) * Kp + k0 + c * 8 : 0), va ? 16 : 0);
  }
}

__global__ __launch_bounds__(kThreads) void tile_fp8(const uint16_t* a16, const float* s, const uint8_t* w, const uint8_t* w_scale,
                                                      float* y, int64_t M, int64_t N, int64_t K, int64_t Kp, int64_t G, float inv_t) {
  __shared__ __align__(128) uint8_t smem[2][2][kTileBytes];  // [stage][A, B]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int row0 = (warp >> 2) * 64, col0 = (warp & 3) * 32;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int kt_count = static_cast<int>(Kp / kKTile);
  const int wr_row = tid >> 1, wr_half = tid & 1;  // this thread's weight channel and 16-k half of each k-tile
  const int64_t wn = n0 + wr_row;

  WeightRegs wreg;
  load_weight(wreg, w, N, K, wn, wr_half * 16);
  load_a16(smem[0][0], a16, M, Kp, m0, 0, tid);
  cp_async_commit();
  float acc[4][4][4] = {};
  for (int kt = 0; kt < kt_count; ++kt) {
    const int st = kt & 1;
    store_weight(smem[st][1], wreg, w_scale, N, K, G, wn, int64_t(kt) * kKTile + wr_half * 16, wr_row, wr_half);
    cp_async_wait<0>();
    __syncthreads();
    if (kt + 1 < kt_count) {
      load_a16(smem[st ^ 1][0], a16, M, Kp, m0, int64_t(kt + 1) * kKTile, tid);
      load_weight(wreg, w, N, K, wn, int64_t(kt + 1) * kKTile + wr_half * 16);
    }
    cp_async_commit();
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      uint32_t af[4][4], bf[4][2];
      load_a_frags(af, smem[st][0], row0, ks, lane);
      load_b_frags(bf, smem[st][1], col0, ks, lane);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_f16(acc[i][j], af[i], bf[j][0], bf[j][1]);
    }
  }
  cp_async_wait<0>();

  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int q2 = 0; q2 < 2; ++q2) {
      const int64_t m = m0 + row0 + i * 16 + g + q2 * 8;
      if (m >= M) continue;
      const float scale = __fmul_rn(s[m], inv_t);
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t n = n0 + col0 + j * 8 + 2 * t4 + e;
          if (n < N) y[m * N + n] = __fmul_rn(acc[i][j][q2 * 2 + e], scale);
        }
    }
}

}  // namespace

size_t matmul_int4_fp8_scratch_bytes(int64_t M, int64_t K) {
  return align256(size_t(M) * size_t(padded_k(K)) * 2) + align256(size_t(M) * sizeof(float));
}

int matmul_int4_fp8_path(const float* x, const uint8_t* w, const uint8_t* w_scale, float* y, int64_t M, int64_t N, int64_t K,
                         int64_t group_size, int64_t t_exponent, void* scratch, GemmPath path, void* stream) {
  if (K <= 0 || N <= 0 || M < 0) throw std::invalid_argument("MatMulInt4Fp8: empty K or N");
  if (group_size <= 0 || K % group_size) throw std::invalid_argument("MatMulInt4Fp8: K must be a multiple of group_size");
  if (K > kInt4Fp8MaxK) throw std::invalid_argument("MatMulInt4Fp8: K above 65536 (the exact sum's bound)");
  if (t_exponent < -64 || t_exponent > 64) throw std::invalid_argument("MatMulInt4Fp8: t_exponent out of [-64, 64]");
  if (M == 0) return 0;
  if (!x || !w || !w_scale || !y || !scratch) throw std::invalid_argument("MatMulInt4Fp8: null input, output or scratch");
  if (M > 2147483647) throw std::invalid_argument("MatMulInt4Fp8: M too large");
  // (the tile path reads the fp16 rows with cp.async: 16-byte alignment; the GEMV and the simple path need none)
  if (path == GemmPath::Auto) path = M <= 8 ? GemmPath::Gemv : aligned16(scratch) ? GemmPath::Tile : GemmPath::Simple;
  if (path != GemmPath::Simple && path != GemmPath::Gemv && path != GemmPath::Tile)
    throw std::invalid_argument(std::string("MatMulInt4Fp8 has no path ") + gemm_path_name(path) + " (cuBLASLt: cuda_lt.h)");
  if (path == GemmPath::Tile && !aligned16(scratch)) throw std::invalid_argument("MatMulInt4Fp8: the tile path needs an aligned scratch");
  if (path == GemmPath::Simple && M > 65535) throw std::invalid_argument("MatMulInt4Fp8: the simple path takes M <= 65535");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t Kp = padded_k(K);
  uint16_t* a16 = static_cast<uint16_t*>(scratch);
  float* s = reinterpret_cast<float*>(static_cast<uint8_t*>(scratch) + align256(size_t(M) * size_t(Kp) * 2));
  const float inv_t = ldexpf(1.0f, -static_cast<int>(t_exponent));
  quantize_rows_fp8<<<unsigned(M), kQuantThreads, 0, st>>>(x, a16, s, K, Kp);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  if (path == GemmPath::Gemv) {
    e = for_row_slices(M, [&](auto mr, int64_t m0) {
      gemv_fp8<decltype(mr)::value><<<blocks_for(N, kGemvWarps), kGemvWarps * 32, 0, st>>>(a16 + m0 * Kp, s + m0, w, w_scale, y + m0 * N,
                                                                                           N, K, Kp, group_size, inv_t);
      return cudaSuccess;
    });
    if (e != cudaSuccess) return e;
  } else if (path == GemmPath::Simple) {
    simple_fp8<<<dim3(blocks_for(N, 128), unsigned(M)), 128, 0, st>>>(a16, s, w, w_scale, y, M, N, K, Kp, group_size, inv_t);
  } else {
    const dim3 grid(blocks_for(N, kBN), blocks_for(M, kBM));
    if (grid.y > 65535) return cudaErrorInvalidConfiguration;
    tile_fp8<<<grid, kThreads, 0, st>>>(a16, s, w, w_scale, y, M, N, K, Kp, group_size, inv_t);
  }
  return cudaGetLastError();
}

int matmul_int4_fp8(const float* x, const uint8_t* w, const uint8_t* w_scale, float* y, int64_t M, int64_t N, int64_t K, int64_t group_size,
                    int64_t t_exponent, void* scratch, void* stream) {
  return matmul_int4_fp8_path(x, w, w_scale, y, M, N, K, group_size, t_exponent, scratch, GemmPath::Auto, stream);
}

}  // namespace quantc::cuda
