// MatMulInt4Int8's decode GEMV, second design (M <= 8): a block takes 32 output channels and walks K in segments of 1024 k
// (512 weight bytes per channel). Phase 1: warp w takes channels 4w .. 4w + 3, lane l the l-th 16 bytes of each channel's segment
// (unpacked once per channel, then dot products with every row of A), the group sums combined across lane pairs (quads) and
// stored in shared memory; the next segment's weights are loaded before phase 2, so they are in flight meanwhile. Phase 2: thread
// (channel, row) folds its groups in order, acc = acc + float(sum) * (a_scale * w_scale) without FMA, as the CPU reference; the
// fold runs across the block's 32 channels x M rows at once instead of one lane per output.
#include <cuda_runtime.h>

#include <stdexcept>
#include <type_traits>

#include "quantc/cuda_gemv.h"

namespace quantc::cuda {
namespace {

constexpr int kRows = 32, kWarps = 8, kThreads = kWarps * 32, kSegBytes = 512, kMaxSegGroups = 32;

__device__ __forceinline__ uint32_t lo4(uint32_t v) { return __vsub4((v & 0x0F0F0F0Fu) ^ 0x08080808u, 0x08080808u); }
__device__ __forceinline__ uint32_t hi4(uint32_t v) { return __vsub4(((v >> 4) & 0x0F0F0F0Fu) ^ 0x08080808u, 0x08080808u); }

template <int MR>
__global__ __launch_bounds__(kThreads) void gemv2(const int8_t* __restrict__ a, const float* __restrict__ a_scale,
                                                  const uint8_t* __restrict__ w, const float* __restrict__ w_scale,
                                                  const float* __restrict__ bias, const float* __restrict__ row_scale, float* __restrict__ y,
                                                  int64_t N, int64_t K, int G) {
  __shared__ int32_t gs[kRows * MR * kMaxSegGroups];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n0 = int64_t(blockIdx.x) * kRows, row_bytes = K / 2, groups = K / G;
  const int64_t segs = (row_bytes + kSegBytes - 1) / kSegBytes;
  const int seg_groups = (2 * kSegBytes) / G;
  // Phase 2's thread: (channel r2, row m2).
  const int r2 = threadIdx.x / MR, m2 = threadIdx.x % MR;
  const bool folds = threadIdx.x < kRows * MR && n0 + r2 < N;
  const float sa = *a_scale;
  float acc = 0.0f;

  auto load = [&](int64_t seg, uint4* v) {
    const int64_t off = seg * kSegBytes + lane * 16;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t n = n0 + warp * 4 + r;
      v[r] = off < row_bytes && n < N ? __ldg(reinterpret_cast<const uint4*>(w + n * row_bytes + off)) : make_uint4(0, 0, 0, 0);
    }
  };
  uint4 cur[4];
  load(0, cur);
  for (int64_t seg = 0; seg < segs; ++seg) {
    const int64_t off = seg * kSegBytes + lane * 16;
    const bool valid = off < row_bytes;
    // k of this lane's low nibbles: chunk c = off / 32, half (off / 16) & 1.
    const int64_t klo = (off >> 5) * 64 + ((off >> 4) & 1) * 16;
    int4 alo[MR], ahi[MR];
#pragma unroll
    for (int m = 0; m < MR; ++m) {
      alo[m] = valid ? __ldg(reinterpret_cast<const int4*>(a + m * K + klo)) : make_int4(0, 0, 0, 0);
      ahi[m] = valid ? __ldg(reinterpret_cast<const int4*>(a + m * K + klo + 32)) : make_int4(0, 0, 0, 0);
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const uint32_t l0 = lo4(cur[r].x), l1 = lo4(cur[r].y), l2 = lo4(cur[r].z), l3 = lo4(cur[r].w);
      const uint32_t h0 = hi4(cur[r].x), h1 = hi4(cur[r].y), h2 = hi4(cur[r].z), h3 = hi4(cur[r].w);
#pragma unroll
      for (int m = 0; m < MR; ++m) {
        int lo = __dp4a(int(l0), alo[m].x, 0);
        lo = __dp4a(int(l1), alo[m].y, lo);
        lo = __dp4a(int(l2), alo[m].z, lo);
        lo = __dp4a(int(l3), alo[m].w, lo);
        int hi = __dp4a(int(h0), ahi[m].x, 0);
        hi = __dp4a(int(h1), ahi[m].y, hi);
        hi = __dp4a(int(h2), ahi[m].z, hi);
        hi = __dp4a(int(h3), ahi[m].w, hi);
        int32_t* out = gs + ((warp * 4 + r) * MR + m) * kMaxSegGroups;
        const int c = lane >> 1;  // the segment's chunk
        if (G == 32) {
          lo += __shfl_xor_sync(0xFFFFFFFFu, lo, 1);
          hi += __shfl_xor_sync(0xFFFFFFFFu, hi, 1);
          if ((lane & 1) == 0) { out[2 * c] = lo; out[2 * c + 1] = hi; }
        } else {
          int t = lo + hi;
          t += __shfl_xor_sync(0xFFFFFFFFu, t, 1);
          if (G == 64) {
            if ((lane & 1) == 0) out[c] = t;
          } else {
            t += __shfl_xor_sync(0xFFFFFFFFu, t, 2);
            if ((lane & 3) == 0) out[c >> 1] = t;
          }
        }
      }
    }
    if (seg + 1 < segs) load(seg + 1, cur);  // in flight during the fold
    __syncthreads();
    if (folds) {
      const int64_t g0 = seg * seg_groups;
      const int count = int(min(int64_t(seg_groups), groups - g0));
      const int32_t* sums = gs + (r2 * MR + m2) * kMaxSegGroups;
      const float* ws = w_scale + (n0 + r2) * groups + g0;
      for (int g = 0; g < count; ++g) acc = __fadd_rn(acc, __fmul_rn(__int2float_rn(sums[g]), __fmul_rn(sa, __ldg(ws + g))));
    }
    __syncthreads();
  }
  if (folds) {
    const int64_t n = n0 + r2;
    const float v = row_scale ? __fmul_rn(acc, row_scale[m2]) : acc;
    y[int64_t(m2) * N + n] = __fadd_rn(v, bias ? bias[n] : 0.0f);
  }
}

template <int MR>
cudaError_t launch(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, const float* row_scale,
                   float* y, int64_t N, int64_t K, int G, cudaStream_t st) {
  gemv2<MR><<<unsigned((N + kRows - 1) / kRows), kThreads, 0, st>>>(a, a_scale, w, w_scale, bias, row_scale, y, N, K, G);
  return cudaGetLastError();
}

// ---- gemv3: float accumulation per lane (not the CPU's in-order fold: compared by relative norm). A warp takes kRows3 channels
// whole; lane l the 16-byte pieces l, l + 32, ... of each channel (two in flight per row); each piece's int32 sums (per half
// chunk for G = 32, per chunk for G >= 64) times a_scale * w_scale go to the lane's float sums; a warp reduction ends it.
// Two channels per warp: measured on the H200 against 4 (fewer A loads per weight byte, but fewer warps in flight), 2 was
// faster at M = 1 and at M = 8 on all three LLaMA-7B shapes.
constexpr int kWarps3 = 4, kRows3 = 2;
// Pieces of each channel in flight per lane: 1 for one or two rows of A, 4 above (H200: 4 slowed M = 1 by 13-32 %, sped
// M = 8 up by 0-20 %).
template <int MR>
constexpr int pieces3() { return MR <= 2 ? 1 : 4; }

template <int MR>
__global__ __launch_bounds__(kWarps3 * 32) void gemv3(const int8_t* __restrict__ a, const float* __restrict__ a_scale,
                                                      const uint8_t* __restrict__ w, const float* __restrict__ w_scale,
                                                      const float* __restrict__ bias, const float* __restrict__ row_scale, float* __restrict__ y,
                                                      int64_t N, int64_t K, int G) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n0 = (int64_t(blockIdx.x) * kWarps3 + warp) * kRows3, row_bytes = K / 2, pieces = row_bytes / 16, groups = K / G;
  if (n0 >= N) return;  // a whole warp past the last channel (no barriers below)
  const float sa = *a_scale;
  float acc[kRows3][MR];
#pragma unroll
  for (int r = 0; r < kRows3; ++r)
#pragma unroll
    for (int m = 0; m < MR; ++m) acc[r][m] = 0.0f;
  // kPieces3 pieces of each channel in flight per lane: all their loads issued before any is used.
  constexpr int kPieces3 = pieces3<MR>();
  for (int64_t p0 = lane; p0 < pieces; p0 += 32 * kPieces3) {
    uint4 v[kPieces3][kRows3];
#pragma unroll
    for (int u = 0; u < kPieces3; ++u)
#pragma unroll
      for (int r = 0; r < kRows3; ++r) {
        const int64_t p = p0 + 32 * u;
        v[u][r] = p < pieces && n0 + r < N ? __ldg(reinterpret_cast<const uint4*>(w + (n0 + r) * row_bytes + p * 16))
                                           : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
    for (int u = 0; u < kPieces3; ++u) {
      const int64_t p = p0 + 32 * u;
      if (p >= pieces) break;
      const int64_t c = p >> 1, klo = c * 64 + (p & 1) * 16;
      // The groups of this piece's low and high nibbles.
      const int64_t glo = G == 32 ? 2 * c : G == 64 ? c : c >> 1, ghi = G == 32 ? 2 * c + 1 : glo;
      float slo[kRows3], shi[kRows3];
#pragma unroll
      for (int r = 0; r < kRows3; ++r) {
        const int64_t n = n0 + r < N ? n0 + r : n0;
        slo[r] = __fmul_rn(sa, __ldg(w_scale + n * groups + glo));
        shi[r] = __fmul_rn(sa, __ldg(w_scale + n * groups + ghi));
      }
#pragma unroll
      for (int m = 0; m < MR; ++m) {
        const int4 al = __ldg(reinterpret_cast<const int4*>(a + m * K + klo));
        const int4 ah = __ldg(reinterpret_cast<const int4*>(a + m * K + klo + 32));
#pragma unroll
        for (int r = 0; r < kRows3; ++r) {
          const uint4 wv = v[u][r];
          int lo = __dp4a(int(lo4(wv.x)), al.x, 0);
          lo = __dp4a(int(lo4(wv.y)), al.y, lo);
          lo = __dp4a(int(lo4(wv.z)), al.z, lo);
          lo = __dp4a(int(lo4(wv.w)), al.w, lo);
          int hi = __dp4a(int(hi4(wv.x)), ah.x, 0);
          hi = __dp4a(int(hi4(wv.y)), ah.y, hi);
          hi = __dp4a(int(hi4(wv.z)), ah.z, hi);
          hi = __dp4a(int(hi4(wv.w)), ah.w, hi);
          if (G == 32) {
            acc[r][m] += float(lo) * slo[r] + float(hi) * shi[r];
          } else {
            acc[r][m] += float(lo + hi) * slo[r];
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows3; ++r)
#pragma unroll
    for (int m = 0; m < MR; ++m) {
      float t = acc[r][m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xFFFFFFFFu, t, o);
      if (lane == 0 && n0 + r < N) {
        const int64_t n = n0 + r;
        const float v = row_scale ? __fmul_rn(t, row_scale[m]) : t;
        y[int64_t(m) * N + n] = __fadd_rn(v, bias ? bias[n] : 0.0f);
      }
    }
}

template <int MR>
cudaError_t launch3(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, const float* row_scale,
                    float* y, int64_t N, int64_t K, int G, cudaStream_t st) {
  const int64_t per_block = kWarps3 * kRows3;
  gemv3<MR><<<unsigned((N + per_block - 1) / per_block), kWarps3 * 32, 0, st>>>(a, a_scale, w, w_scale, bias, row_scale, y, N, K, G);
  return cudaGetLastError();
}

}  // namespace

namespace {

template <template <int> class L>
int for_slices(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, const float* row_scale,
               float* y, int64_t M, int64_t N, int64_t K, int64_t group_size, void* stream) {
  if (K % 64) throw std::invalid_argument("MatMulInt4Int8 needs K % 64 == 0");
  if (group_size != 32 && group_size != 64 && group_size != 128) throw std::invalid_argument("group_size must be 32, 64 or 128");
  if (K % group_size) throw std::invalid_argument("K must be a multiple of group_size");
  if (M < 0 || N < 0) throw std::invalid_argument("MatMulInt4Int8: negative dimension");
  if ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(w)) & 15)
    throw std::invalid_argument("MatMulInt4Int8: the GEMV needs 16-byte aligned A and B");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int G = int(group_size);
  for (int64_t m0 = 0; m0 < M; m0 += 8) {
    const int64_t rows = M - m0 < 8 ? M - m0 : 8;
    const int8_t* am = a + m0 * K;
    const float* rs = row_scale ? row_scale + m0 : nullptr;
    float* ym = y + m0 * N;
    cudaError_t e;
    switch (rows) {
      case 1: e = L<1>::run(am, a_scale, w, w_scale, bias, rs, ym, N, K, G, st); break;
      case 2: e = L<2>::run(am, a_scale, w, w_scale, bias, rs, ym, N, K, G, st); break;
      case 3: e = L<3>::run(am, a_scale, w, w_scale, bias, rs, ym, N, K, G, st); break;
      case 4: e = L<4>::run(am, a_scale, w, w_scale, bias, rs, ym, N, K, G, st); break;
      case 5: e = L<5>::run(am, a_scale, w, w_scale, bias, rs, ym, N, K, G, st); break;
      case 6: e = L<6>::run(am, a_scale, w, w_scale, bias, rs, ym, N, K, G, st); break;
      case 7: e = L<7>::run(am, a_scale, w, w_scale, bias, rs, ym, N, K, G, st); break;
      default: e = L<8>::run(am, a_scale, w, w_scale, bias, rs, ym, N, K, G, st); break;
    }
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

template <int MR>
struct Exact {
  static cudaError_t run(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias,
                         const float* row_scale, float* y, int64_t N, int64_t K, int G, cudaStream_t st) {
    return launch<MR>(a, a_scale, w, w_scale, bias, row_scale, y, N, K, G, st);
  }
};

template <int MR>
struct Fast {
  static cudaError_t run(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias,
                         const float* row_scale, float* y, int64_t N, int64_t K, int G, cudaStream_t st) {
    return launch3<MR>(a, a_scale, w, w_scale, bias, row_scale, y, N, K, G, st);
  }
};

}  // namespace

int matmul_int4_int8_gemv2(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias,
                           const float* row_scale, float* y, int64_t M, int64_t N, int64_t K, int64_t group_size, void* stream) {
  return for_slices<Exact>(a, a_scale, w, w_scale, bias, row_scale, y, M, N, K, group_size, stream);
}

int matmul_int4_int8_gemv3(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias,
                           const float* row_scale, float* y, int64_t M, int64_t N, int64_t K, int64_t group_size, void* stream) {
  return for_slices<Fast>(a, a_scale, w, w_scale, bias, row_scale, y, M, N, K, group_size, stream);
}

}  // namespace quantc::cuda
