// MatMulInt4Int8 on CUDA (int8 A, or float A quantized per token inside), equal to the CPU reference (quantc::matmul_int4_int8,
// and quantize_rows_int8 + it for float A) bit for bit: the group sums are exact int32, folded into one float accumulator per
// output in group order as acc = acc + float(gsum) * (a_scale * w_scale[n][g]) (__fmul_rn / __fadd_rn, no FMA), then + bias.
// Paths: GEMV (M <= 8: 16-byte weight loads, SWAR nibble unpacking, __dp4a; warps split K into exact group sums kept in shared
// memory, one thread per output folds them in order), the tensor-core tile GEMM (as gemm_int8.cu's, the int4 tile unpacked in
// registers after ldmatrix, an int32 accumulator per group folded into float accumulators), and a simple one-thread-per-output kernel.
#include <cuda_runtime.h>

#include <stdexcept>

#include "gemm_common.cuh"
#include "quantc/cuda_gemm_paths.h"
#include "quantc/cuda_gemv.h"
#include "quantc/cuda_ops.h"

namespace quantc::cuda {
namespace {

using namespace gemm;

// The last step of an output: times the per-token scale (float A) or not, then + bias.
__device__ __forceinline__ float finish(float acc, const float* row_scale, int64_t m, const float* bias, int64_t n) {
  const float v = row_scale ? __fmul_rn(acc, row_scale[m]) : acc;
  return __fadd_rn(v, bias ? bias[n] : 0.0f);
}

__device__ __forceinline__ int nibble(const uint8_t* wrow, int64_t k) {
  const int j = int(k & 63);
  const uint8_t byte = wrow[(k >> 6) * 32 + (j & 31)];
  const int v = j >= 32 ? byte >> 4 : byte & 0xF;
  return v >= 8 ? v - 16 : v;
}

__global__ void simple_int4(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias,
                            const float* row_scale, float* y, int64_t M, int64_t N, int64_t K, int64_t G) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, m = blockIdx.y;
  if (n >= N || m >= M) return;
  const int8_t* ar = a + m * K;
  const uint8_t* wr = w + n * (K / 2);
  const int64_t groups = K / G;
  const float sa = *a_scale;
  float acc = 0.0f;
  for (int64_t g = 0; g < groups; ++g) {
    int32_t s = 0;
    for (int64_t k = g * G; k < (g + 1) * G; ++k) s += int32_t(ar[k]) * nibble(wr, k);
    acc = __fadd_rn(acc, __fmul_rn(__int2float_rn(s), __fmul_rn(sa, w_scale[n * groups + g])));
  }
  y[m * N + n] = finish(acc, row_scale, m, bias, n);
}

// ---- GEMV: a block of 4 warps computes kGemvRows output channels for MR rows of A. Warp w takes the 512-byte windows w, w + 4, ...
// of each weight row (lane l: bytes 16 l .. 16 l + 15 of the window, i.e. half h = l & 1 of chunk l / 2: k = 64 c + 16 h + i in the
// low nibbles, + 32 in the high ones); the group sums (lane pairs / quads combined by shuffles) go to shared memory
// [row][m][group], then thread (row, m) folds its groups in order.
constexpr int kGemvRows = 4, kGemvWarps = 4;

__device__ __forceinline__ int dot16(uint4 wv, const int4& av, bool high) {
  int s = 0;
  s = __dp4a(int(high ? nib_hi(wv.x) : nib_lo(wv.x)), av.x, s);
  s = __dp4a(int(high ? nib_hi(wv.y) : nib_lo(wv.y)), av.y, s);
  s = __dp4a(int(high ? nib_hi(wv.z) : nib_lo(wv.z)), av.z, s);
  s = __dp4a(int(high ? nib_hi(wv.w) : nib_lo(wv.w)), av.w, s);
  return s;
}

template <int MR>
__global__ __launch_bounds__(kGemvWarps * 32) void gemv_int4(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale,
                                                               const float* bias, const float* row_scale, float* y, int64_t N, int64_t K,
                                                               int G) {
  extern __shared__ int32_t gsum[];  // [kGemvRows][MR][K / G]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n0 = int64_t(blockIdx.x) * kGemvRows, row_bytes = K / 2, groups = K / G;
  for (int64_t wb0 = int64_t(warp) * 512; wb0 < row_bytes; wb0 += kGemvWarps * 512) {
    const int64_t wb = wb0 + lane * 16;
    const bool valid = wb < row_bytes;  // lane pairs (quads) share validity: row_bytes % 32 == 0 (% 64 when G == 128)
    const int64_t c = wb >> 5, klo = 64 * c + ((wb >> 4) & 1) * 16;
    uint4 wv[kGemvRows];
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r)
      wv[r] = valid && n0 + r < N ? __ldg(reinterpret_cast<const uint4*>(w + (n0 + r) * row_bytes + wb)) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int m = 0; m < MR; ++m) {
      const int4 alo = valid ? __ldg(reinterpret_cast<const int4*>(a + m * K + klo)) : make_int4(0, 0, 0, 0);
      const int4 ahi = valid ? __ldg(reinterpret_cast<const int4*>(a + m * K + klo + 32)) : make_int4(0, 0, 0, 0);
#pragma unroll
      for (int r = 0; r < kGemvRows; ++r) {
        int lo = dot16(wv[r], alo, false), hi = dot16(wv[r], ahi, true);
        int32_t* out = gsum + (r * MR + m) * groups;
        if (G == 32) {
          lo += __shfl_xor_sync(0xFFFFFFFFu, lo, 1);
          hi += __shfl_xor_sync(0xFFFFFFFFu, hi, 1);
          if (valid && (lane & 1) == 0) { out[2 * c] = lo; out[2 * c + 1] = hi; }
        } else {
          int t = lo + hi;
          t += __shfl_xor_sync(0xFFFFFFFFu, t, 1);
          if (G == 64) {
            if (valid && (lane & 1) == 0) out[c] = t;
          } else {
            t += __shfl_xor_sync(0xFFFFFFFFu, t, 2);
            if (valid && (lane & 3) == 0) out[c >> 1] = t;
          }
        }
      }
    }
  }
  gemv_outputs<kGemvRows, MR>(n0, N, [&](int r, int m, int64_t n) {
    const float sa = *a_scale;
    const int32_t* gs = gsum + (r * MR + m) * groups;
    const float* ws = w_scale + n * groups;
    float acc = 0.0f;
#pragma unroll 4
    for (int64_t g = 0; g < groups; ++g) acc = __fadd_rn(acc, __fmul_rn(__int2float_rn(gs[g]), __fmul_rn(sa, __ldg(ws + g))));
    y[int64_t(m) * N + n] = finish(acc, row_scale, m, bias, n);
  });
}

// ---- the tile GEMM: A k-tiles as gemm_int8.cu's ([128][64] int8, swizzled); the weight's k-tile is one 64-k chunk, 32 bytes per
// channel ([128][32], its two 16-byte chunks swizzled by row bit 2). ldmatrix gives each lane the packed words of its B fragments;
// the low nibbles are k-step 0 (k 0..31 of the chunk), the high nibbles k-step 1 (k 32..63).
constexpr int kStages = 4;
constexpr int kWTileBytes = kBN * 32;
constexpr int kStageBytes = kTileBytes + kWTileBytes;
constexpr int kTileSmem = kStages * kStageBytes;


__device__ __forceinline__ void load_tile_int4(uint8_t* sa, uint8_t* sw, const int8_t* a, const uint8_t* w, int64_t M, int64_t N,
                                               int64_t K, int64_t m0, int64_t n0, int64_t kt, int tid) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = load_row(tid, i), c = load_chunk(tid, i);
    const bool va = m0 + r < M;
    cp_async16(sa + swz(r, c), a + (va ? (m0 + r) * K + kt * 64 + c * 16 : 0), va ? 16 : 0);
  }
  const int r = tid >> 1, c = tid & 1;
  const bool vw = n0 + r < N;
  cp_async16(sw + swz32(r, c), w + (vw ? (n0 + r) * (K / 2) + kt * 32 + c * 16 : 0), vw ? 16 : 0);
}

__global__ __launch_bounds__(kThreads) void tile_int4(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale,
                                                       const float* bias, const float* row_scale, float* y, int64_t M, int64_t N, int64_t K,
                                                       int G) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int row0 = (warp >> 2) * 64, col0 = (warp & 3) * 32;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int kt_count = static_cast<int>(K / 64);
  const int64_t groups = K / G;
  const float sa = *a_scale;
  const int t4 = lane & 3;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < kt_count) load_tile_int4(smem + s * kStageBytes, smem + s * kStageBytes + kTileBytes, a, w, M, N, K, m0, n0, s, tid);
    cp_async_commit();
  }
  int32_t iacc[4][4][4] = {};
  float facc[4][4][4] = {};
  for (int kt = 0; kt < kt_count; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    const int pre = kt + kStages - 1;
    if (pre < kt_count) {
      uint8_t* st = smem + (pre % kStages) * kStageBytes;
      load_tile_int4(st, st + kTileBytes, a, w, M, N, K, m0, n0, pre, tid);
    }
    cp_async_commit();
    const uint8_t* ta = smem + (kt % kStages) * kStageBytes;
    const uint8_t* tw = ta + kTileBytes;
    // k-step s = 2 kt + ks covers k in [32 s, 32 s + 32): a group ends with it when 32 (s + 1) % G == 0. The scales of the groups
    // that end in this k-tile are loaded first (sc[ks][j][e] = a_scale * w_scale[n][g]), their latency hidden by the mma work.
    const int64_t k0 = int64_t(kt) * 64;
    const bool fold[2] = {(k0 + 32) % G == 0, (k0 + 64) % G == 0};
    float sc[2][4][2];
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      if (!fold[ks]) continue;
      const int64_t g = (k0 + 32 * (ks + 1)) / G - 1;
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t n = n0 + col0 + j * 8 + 2 * t4 + e;
          sc[ks][j][e] = n < N ? __ldg(w_scale + n * groups + g) : 0.0f;
        }
    }
    // The packed words of this warp's 4 n8 tiles: pw[j][0] bytes 4 t4.. (k 4 t4.. of each half), pw[j][1] bytes 16 + 4 t4...
    uint32_t pw[4][2];
#pragma unroll
    for (int j = 0; j < 4; j += 2) ldmatrix_x4(pw[j][0], pw[j][1], pw[j + 1][0], pw[j + 1][1], tw + w4_frag_offset(col0, j, lane));
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      uint32_t af[4][4];
      load_a_frags(af, ta, row0, ks, lane);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t b0 = ks ? nib_hi(pw[j][0]) : nib_lo(pw[j][0]), b1 = ks ? nib_hi(pw[j][1]) : nib_lo(pw[j][1]);
#pragma unroll
        for (int i = 0; i < 4; ++i) mma_s8(iacc[i][j], af[i], b0, b1);
      }
      if (fold[ks]) {
        for_each_acc(lane, [&](int i, int j, int q, int, int) {
          facc[i][j][q] = __fadd_rn(facc[i][j][q], __fmul_rn(__int2float_rn(iacc[i][j][q]), __fmul_rn(sa, sc[ks][j][q & 1])));
          iacc[i][j][q] = 0;
        });
      }
    }
  }
  cp_async_wait<0>();

  for_each_acc(lane, [&](int i, int j, int q, int r, int c) {
    const int64_t m = m0 + row0 + r, n = n0 + col0 + c;
    if (m < M && n < N) y[m * N + n] = finish(facc[i][j][q], row_scale, m, bias, n);
  });
}

// ---- float A: per-token int8 quantization (quantize.h quantize_rows_int8), one block per row.
constexpr int kQuantThreads = 256;

__global__ __launch_bounds__(kQuantThreads) void quantize_rows(const float* x, int8_t* q, float* s, int64_t K) {
  const int64_t m = blockIdx.x;
  const float* xr = x + m * K;
  // row_scale_int8: (NaN when the row holds one, else max(max |x|, 1e-12)) / 127, a true division.
  const float sc = block_row_scale<kQuantThreads>(xr, K, 127.0f);
  if (threadIdx.x == 0) s[m] = sc;
  for (int64_t k = threadIdx.x; k < K; k += kQuantThreads) {
    const float r = __fdiv_rn(xr[k], sc);
    // saturate(round_half_even): NaN converts to 0 (the row's scale is NaN then, so its outputs are NaN anyway).
    const int v = isnan(r) ? 0 : __float2int_rn(fminf(fmaxf(r, -128.0f), 127.0f));
    q[m * K + k] = static_cast<int8_t>(v);
  }
}

template <int MR>
cudaError_t launch_gemv(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias,
                        const float* row_scale, float* y, int64_t N, int64_t K, int G, cudaStream_t st) {
  const size_t smem = size_t(kGemvRows) * MR * (K / G) * sizeof(int32_t);
  if (smem > 48 * 1024) {  // above the default limit (set on each such call: cheap, and no shared state between threads)
    const cudaError_t e = cudaFuncSetAttribute(gemv_int4<MR>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return e;
  }
  gemv_int4<MR><<<blocks_for(N, kGemvRows), kGemvWarps * 32, smem, st>>>(a, a_scale, w, w_scale, bias, row_scale, y, N, K, G);
  return cudaSuccess;
}

// The GEMV's shared memory for 8 rows: [4][8][K / G] int32; above this the tile GEMM runs instead.
constexpr size_t kGemvSmemMax = 96 * 1024;

cudaError_t gemv(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, const float* row_scale,
                 float* y, int64_t M, int64_t N, int64_t K, int G, cudaStream_t st) {
  return for_row_slices(M, [&](auto mr, int64_t m0) {
    return launch_gemv<decltype(mr)::value>(a + m0 * K, a_scale, w, w_scale, bias, row_scale ? row_scale + m0 : nullptr, y + m0 * N, N,
                                            K, G, st);
  });
}

cudaError_t tile(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, const float* row_scale,
                 float* y, int64_t M, int64_t N, int64_t K, int G, cudaStream_t st) {
  // Set on each call: the attribute belongs to the current device's context (another device, or a reset context, lacks it).
  const cudaError_t attr = cudaFuncSetAttribute(tile_int4, cudaFuncAttributeMaxDynamicSharedMemorySize, kTileSmem);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(blocks_for(N, kBN), blocks_for(M, kBM));
  if (grid.y > 65535) return cudaErrorInvalidConfiguration;
  tile_int4<<<grid, kThreads, kTileSmem, st>>>(a, a_scale, w, w_scale, bias, row_scale, y, M, N, K, G);
  return cudaSuccess;
}

void check_args(const char* op, int64_t M, int64_t N, int64_t K, int64_t G) {
  const std::string o = op;
  if (M < 0 || N < 0 || K < 0) throw std::invalid_argument(o + ": negative dimension");
  if (K % 64) throw std::invalid_argument(o + " needs K % 64 == 0");
  if (G != 32 && G != 64 && G != 128) throw std::invalid_argument("group_size must be 32, 64 or 128");
  if (K % G) throw std::invalid_argument("K must be a multiple of group_size");
}

// The int8-A GEMM with an optional per-row output scale (float A): the path's kernel(s), launch errors returned.
cudaError_t run(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, const float* row_scale,
                float* y, int64_t M, int64_t N, int64_t K, int G, GemmPath path, cudaStream_t st) {
  const bool aligned = aligned16(a) && aligned16(w);
  const bool gemv_fits = size_t(kGemvRows) * 8 * (K / G) * sizeof(int32_t) <= kGemvSmemMax;
  if (path == GemmPath::Auto) path = !aligned ? GemmPath::Simple : M <= 8 ? GemmPath::GemvFloat : GemmPath::Tile;
  if (path == GemmPath::GemvSeg || path == GemmPath::GemvFloat) {
    const auto gemv2 = path == GemmPath::GemvSeg ? matmul_int4_int8_gemv2 : matmul_int4_int8_gemv3;
    return static_cast<cudaError_t>(gemv2(a, a_scale, w, w_scale, bias, row_scale, y, M, N, K, G, st));
  }
  if (path == GemmPath::Lt) throw std::invalid_argument("MatMulInt4Int8 has no cuBLASLt path (its group scales)");
  if (path != GemmPath::Simple && !aligned) throw std::invalid_argument("MatMulInt4Int8: the GEMV and tile paths need aligned A and B");
  if (path == GemmPath::Gemv && !gemv_fits) throw std::invalid_argument("MatMulInt4Int8: K / group_size too large for the GEMV path");
  if (path == GemmPath::Simple) {
    if (M > 65535) throw std::invalid_argument("MatMulInt4Int8: the simple path takes M <= 65535");
    simple_int4<<<dim3(blocks_for(N, 128), unsigned(M)), 128, 0, st>>>(a, a_scale, w, w_scale, bias, row_scale, y, M, N, K, G);
    return cudaSuccess;
  }
  if (path == GemmPath::Gemv) return gemv(a, a_scale, w, w_scale, bias, row_scale, y, M, N, K, G, st);
  return tile(a, a_scale, w, w_scale, bias, row_scale, y, M, N, K, G, st);
}

}  // namespace

int matmul_int4_int8_path(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, float* y,
                          int64_t M, int64_t N, int64_t K, int64_t group_size, GemmPath path, void* stream) {
  check_args("MatMulInt4Int8", M, N, K, group_size);
  if (M == 0 || N == 0) return 0;
  if (!a || !a_scale || !w || !w_scale || !y) throw std::invalid_argument("MatMulInt4Int8: null input or output");
  const cudaError_t e = run(a, a_scale, w, w_scale, bias, nullptr, y, M, N, K, int(group_size), path, static_cast<cudaStream_t>(stream));
  return e != cudaSuccess ? e : cudaGetLastError();
}

size_t matmul_int4_f32_scratch_bytes(int64_t M, int64_t K) { return align256(size_t(M) * size_t(K)) + align256(size_t(M) * sizeof(float)); }

int matmul_int4_f32_path(const float* x, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, float* y,
                         int64_t M, int64_t N, int64_t K, int64_t group_size, void* scratch, GemmPath path, void* stream) {
  check_args("MatMulInt4Int8", M, N, K, group_size);
  if (M == 0 || N == 0) return 0;
  if (!x || !a_scale || !w || !w_scale || !y || !scratch) throw std::invalid_argument("MatMulInt4Int8: null input, output or scratch");
  if (M > 2147483647) throw std::invalid_argument("MatMulInt4Int8: M too large");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int8_t* q = static_cast<int8_t*>(scratch);
  float* s = reinterpret_cast<float*>(static_cast<uint8_t*>(scratch) + align256(size_t(M) * size_t(K)));
  quantize_rows<<<unsigned(M), kQuantThreads, 0, st>>>(x, q, s, K);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  e = run(q, a_scale, w, w_scale, bias, s, y, M, N, K, int(group_size), path, st);
  return e != cudaSuccess ? e : cudaGetLastError();
}

int matmul_int4_int8(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, float* y, int64_t M,
                     int64_t N, int64_t K, int64_t group_size, void* stream) {
  return matmul_int4_int8_path(a, a_scale, w, w_scale, bias, y, M, N, K, group_size, GemmPath::Auto, stream);
}

int matmul_int4_f32(const float* x, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, float* y, int64_t M,
                    int64_t N, int64_t K, int64_t group_size, void* scratch, void* stream) {
  return matmul_int4_f32_path(x, a_scale, w, w_scale, bias, y, M, N, K, group_size, scratch, GemmPath::Auto, stream);
}

}  // namespace quantc::cuda
