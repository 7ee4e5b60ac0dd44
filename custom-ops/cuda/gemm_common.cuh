// Device helpers shared by the GEMM kernels (gemm_int8.cu, gemm_int4.cu, gemm_int4_fp8.cu): cp.async, ldmatrix and
// mma.sync wrappers (sm_80+), the swizzled shared-memory tile geometry, the int4 nibble unpacking, launch helpers.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace quantc::cuda::gemm {

// ---- the tile GEMM's geometry: a block computes BM x BN outputs with 8 warps (2 x 4), each warp 64 x 32 (4 x 4 mma tiles);
// a k-tile is 64 bytes per row (64 int8 k's, or 32 fp16 k's), stored in 16-byte chunks swizzled so ldmatrix is conflict-free.
constexpr int kBM = 128, kBN = 128, kBKBytes = 64, kThreads = 256;
constexpr int kTileBytes = kBM * kBKBytes;  // one operand's k-tile (kBM == kBN)

// Byte offset of 16-byte chunk c (0..3) of row r in a [rows][64 bytes] tile.
__host__ __device__ __forceinline__ int swz(int r, int c) { return r * 64 + ((c ^ ((r >> 1) & 3)) << 4); }
// The same for a [rows][32 bytes] tile (the int4 weight's k-tile): chunk c (0..1) swizzled by row bit 2.
__host__ __device__ __forceinline__ int swz32(int r, int c) { return r * 32 + ((c ^ ((r >> 2) & 1)) << 4); }

// ldmatrix.x4 row addresses (lane l supplies row l % 8 of matrix l / 8; lane l then receives word l % 4 of row l / 4 of each
// matrix). A fragments of m16 tile i, k-step ks: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31),
// (rows 8-15, k 16-31) = a0..a3. B fragments of the n8 tiles j, j + 1 ([n][k] tile): (n 0-7, k 0-15), (n 0-7, k 16-31),
// (n 8-15, k 0-15), (n 8-15, k 16-31) = b[j][0], b[j][1], b[j+1][0], b[j+1][1].
__host__ __device__ __forceinline__ int a_frag_offset(int row0, int i, int ks, int lane) {
  return swz(row0 + i * 16 + (lane & 15), 2 * ks + (lane >> 4));
}
__host__ __device__ __forceinline__ int b_frag_offset(int col0, int j, int ks, int lane) {
  return swz(col0 + j * 8 + (lane & 7) + 8 * (lane >> 4), 2 * ks + ((lane >> 3) & 1));
}
// The int4 weight tile's packed words for n8 tiles j, j + 1: (n 0-7, bytes 0-15), (n 0-7, bytes 16-31), (n 8-15, ...), ...
__host__ __device__ __forceinline__ int w4_frag_offset(int col0, int j, int lane) {
  return swz32(col0 + j * 8 + (lane & 7) + 8 * (lane >> 4), (lane >> 3) & 1);
}
// The accumulator element q of mma tile (i, j): row and column in the warp's 64 x 32 tile (m16n8 C fragment).
__host__ __device__ __forceinline__ int acc_row(int lane, int i, int q) { return i * 16 + (lane >> 2) + (q >> 1) * 8; }
__host__ __device__ __forceinline__ int acc_col(int lane, int j, int q) { return j * 8 + 2 * (lane & 3) + (q & 1); }

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// 16-byte global -> shared copy; src_bytes = 0 fills the 16 bytes with zeros (the source is not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_addr(p)));
}

// D = A (16 x 32 s8, row) * B (32 x 8 s8, col) + D, int32 exact.
// (Not volatile: a pure register operation the compiler may schedule; ldmatrix and cp.async stay volatile, ordered with barriers.)
__device__ __forceinline__ void mma_s8(int32_t* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D = A (16 x 16 f16, row) * B (16 x 8 f16, col) + D in float32.
__device__ __forceinline__ void mma_f16(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The A fragments of one warp's 4 m16 tiles for the 32-byte k-step ks (0 or 1) of a swizzled [128][64] tile; row0 = the
// warp's first row.
__device__ __forceinline__ void load_a_frags(uint32_t (&a)[4][4], const uint8_t* tile, int row0, int ks, int lane) {
#pragma unroll
  for (int i = 0; i < 4; ++i) ldmatrix_x4(a[i][0], a[i][1], a[i][2], a[i][3], tile + a_frag_offset(row0, i, ks, lane));
}

// The B fragments of one warp's 4 n8 tiles (k-step ks) of a swizzled [128][64] tile stored [n][k]; b[j][0..1] for n-tile j.
__device__ __forceinline__ void load_b_frags(uint32_t (&b)[4][2], const uint8_t* tile, int col0, int ks, int lane) {
#pragma unroll
  for (int j = 0; j < 4; j += 2) ldmatrix_x4(b[j][0], b[j][1], b[j + 1][0], b[j + 1][1], tile + b_frag_offset(col0, j, ks, lane));
}

// Four int4 (two's complement) nibbles of a word, sign-extended to four int8 bytes: the low nibbles, or the high ones.
__device__ __forceinline__ uint32_t nib_lo(uint32_t w) { return __vsub4((w & 0x0F0F0F0Fu) ^ 0x08080808u, 0x08080808u); }
__device__ __forceinline__ uint32_t nib_hi(uint32_t w) { return __vsub4(((w >> 4) & 0x0F0F0F0Fu) ^ 0x08080808u, 0x08080808u); }
// The tile loaders' chunk of thread tid, copy i: row and 16-byte chunk of a [128][64] tile (512 chunks, 2 per thread).
__host__ __device__ __forceinline__ int load_row(int tid, int i) { return (tid + i * kThreads) >> 2; }
__host__ __device__ __forceinline__ int load_chunk(int tid, int i) { return (tid + i * kThreads) & 3; }

// Calls f(i, j, q, r, c) for each of a warp tile's 4 x 4 x 4 accumulators: mma tile (i, j), element q, at row r and column c of the
// warp's 64 x 32 tile.
template <class F>
__device__ __forceinline__ void for_each_acc(int lane, F&& f) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) f(i, j, q, acc_row(lane, i, q), acc_col(lane, j, q));
}

// The per-row dynamic scale max(max |x|, 1e-12) / divisor (a true division) of a row of K floats, for a block of THREADS threads (every
// thread gets it); NaN when the row holds a NaN.
template <int THREADS>
__device__ float block_row_scale(const float* xr, int64_t K, float divisor) {
  __shared__ float red[THREADS / 32];
  __shared__ int nan_any[THREADS / 32];
  float mx = 0.0f;
  int nan = 0;
  for (int64_t k = threadIdx.x; k < K; k += THREADS) {
    const float v = xr[k];
    nan |= isnan(v);
    mx = fmaxf(mx, fabsf(v));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, o));
    nan |= __shfl_xor_sync(0xFFFFFFFFu, nan, o);
  }
  if ((threadIdx.x & 31) == 0) { red[threadIdx.x >> 5] = mx; nan_any[threadIdx.x >> 5] = nan; }
  __syncthreads();
  float v = 0.0f;
  int n = 0;
#pragma unroll
  for (int i = 0; i < THREADS / 32; ++i) { v = fmaxf(v, red[i]); n |= nan_any[i]; }
  return n ? __int_as_float(0x7FC00000) : __fdiv_rn(fmaxf(v, 1e-12f), divisor);
}

// The GEMVs' last step: after a barrier, f(r, m, n) by thread r * MR + m for output channel n = n0 + r < N and row m.
template <int ROWS, int MR, class F>
__device__ __forceinline__ void gemv_outputs(int64_t n0, int64_t N, F&& f) {
  __syncthreads();
  const int t = threadIdx.x;
  if (t < ROWS * MR && n0 + t / MR < N) f(t / MR, t % MR, n0 + t / MR);
}

// Runs launch(std::integral_constant<int, MR>{}, m0) for the slices [m0, m0 + MR) of M rows, MR <= 8 (kernels instantiated per
// row count); returns the first error.
template <class F>
cudaError_t for_row_slices(int64_t M, F&& launch) {
  for (int64_t m0 = 0; m0 < M; m0 += 8) {
    cudaError_t e;
    switch (M - m0 < 8 ? M - m0 : 8) {
      case 1: e = launch(std::integral_constant<int, 1>{}, m0); break;
      case 2: e = launch(std::integral_constant<int, 2>{}, m0); break;
      case 3: e = launch(std::integral_constant<int, 3>{}, m0); break;
      case 4: e = launch(std::integral_constant<int, 4>{}, m0); break;
      case 5: e = launch(std::integral_constant<int, 5>{}, m0); break;
      case 6: e = launch(std::integral_constant<int, 6>{}, m0); break;
      case 7: e = launch(std::integral_constant<int, 7>{}, m0); break;
      default: e = launch(std::integral_constant<int, 8>{}, m0); break;
    }
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
inline int blocks_for(int64_t n, int64_t per) { return static_cast<int>((n + per - 1) / per); }
inline size_t align256(size_t n) { return (n + 255) / 256 * 256; }

}  // namespace quantc::cuda::gemm
