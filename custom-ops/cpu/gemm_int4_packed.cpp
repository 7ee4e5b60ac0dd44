// MatMulInt4Int8 as a packed, register-blocked GEMM (AVX-512 VNNI and AVX2), see PackedInt4 in gemm.h.
// Built with -ffp-contract=off: the per-group fold must round like the reference (no fused multiply-add).
// GCC 12's AVX-512 headers trip -Wuninitialized on their own temporaries (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "quantc/gemm.h"
#include "quantc/hadamard.h"
#include "quantc/quantize.h"

namespace quantc {

namespace {

void check_shape(int64_t K, int64_t G) {
  if (K % 64) throw std::invalid_argument("MatMulInt4Int8 needs K % 64 == 0");
  if (G != 32 && G != 64 && G != 128) throw std::invalid_argument("group_size must be 32, 64 or 128");
  if (K % G) throw std::invalid_argument("K must be a multiple of group_size");
}

}  // namespace

PackedInt4 pack_int4_gemm(const uint8_t* w, const float* w_scale, int64_t N, int64_t K, int64_t group_size) {
  check_shape(K, group_size);
  PackedInt4 p;
  p.N = N;
  p.K = K;
  p.G = group_size;
  p.panels = (N + 15) / 16;
  const int64_t blocks = K / 8, groups = K / group_size;
  p.data.assign(static_cast<size_t>(p.panels * blocks * 64), 0x88);  // padding columns: w = 0
  p.scale.assign(static_cast<size_t>(p.panels * groups * 16), 0.0f);
  // Column by column: its K biased nibbles (w + 8) unpacked from the chunked layout (per 64 k, 32 bytes: k 0-31 in the low
  // nibbles, 32-63 in the high ones), then each block's quads (k 8b .. 8b+3 low, 8b+4 .. 8b+7 high) into the panel's lane.
  std::vector<uint8_t> u(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    const int64_t panel = n / 16, lane = n % 16;
    const uint8_t* src = w + n * (K / 2);
    for (int64_t c = 0; c < K / 64; ++c)
      for (int t = 0; t < 32; ++t) {
        const uint8_t byte = src[32 * c + t];
        u[static_cast<size_t>(64 * c + t)] = static_cast<uint8_t>((byte & 0xF) ^ 8);
        u[static_cast<size_t>(64 * c + 32 + t)] = static_cast<uint8_t>((byte >> 4) ^ 8);
      }
    uint8_t* dst = p.data.data() + panel * blocks * 64 + lane * 4;
    for (int64_t b = 0; b < blocks; ++b)
      for (int i = 0; i < 4; ++i)
        dst[b * 64 + i] = static_cast<uint8_t>(u[static_cast<size_t>(8 * b + i)] | (u[static_cast<size_t>(8 * b + 4 + i)] << 4));
    for (int64_t g = 0; g < groups; ++g) p.scale[static_cast<size_t>((panel * groups + g) * 16 + lane)] = w_scale[n * groups + g];
  }
  return p;
}

namespace {

struct Job {
  const int8_t* a;        // [M, K]
  const int32_t* asum8;   // [M, groups]: 8 * (sum of the group's activations), the bias correction
  const float* row_scale; // [M] or null: each output row multiplied by it before + bias (per-token dynamic A)
  const PackedInt4* p;
  int64_t M;
  float a_scale;
  const float* bias;
  float* y;
  int64_t row_blocks;     // work items are (panel group, row block), row blocks of kRowBlock rows
};

constexpr int64_t kRowBlock = 64;  // rows per work item (a multiple of every tile's row count)
constexpr int64_t kGemvMaxRows = 1;  // the GEMV path up to this many rows: the measured crossover (bench/RESULTS.md)

inline int32_t quad_at(const int8_t* p) {
  int32_t q;
  std::memcpy(&q, p, 4);
  return q;
}

// ---- AVX-512 VNNI: 16 columns x 4 k per zmm; vpdpbusd(u8 weights, s8 broadcast activation quad) ----

// Y[m0 .. m0 + ROWS) x [16 * p0, 16 * (p0 + np)) with ROWS x PANELS int32 accumulators per group, folded
// into float accumulators in group order: acc += float(sum - 8 * asum) * (a_scale * w_scale).
template <int ROWS, int PANELS>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void tile_vnni(const Job& j, int64_t m0, int64_t p0, int np) {
  const PackedInt4& p = *j.p;
  const int64_t K = p.K, blocks = K / 8, groups = K / p.G, per_group = p.G / 8;
  const __m512i mask = _mm512_set1_epi8(0x0F);
  const __m512 a_scale = _mm512_set1_ps(j.a_scale);
  const uint8_t* wp[PANELS];
  const float* sp[PANELS];
  __mmask16 valid[PANELS];
  for (int c = 0; c < PANELS; ++c) {
    const int64_t panel = p0 + (c < np ? c : 0);
    wp[c] = p.data.data() + panel * blocks * 64;
    sp[c] = p.scale.data() + panel * groups * 16;
    const int64_t lanes = c < np ? std::min<int64_t>(16, p.N - (p0 + c) * 16) : 0;
    valid[c] = static_cast<__mmask16>((1u << lanes) - 1u);
  }
  __m512 facc[ROWS][PANELS];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < PANELS; ++c) facc[r][c] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512i iacc[ROWS][PANELS];  // starts at -8 * (the group's activation sum): the weights' bias of 8 removed exactly
    for (int r = 0; r < ROWS; ++r) {
      const __m512i start = _mm512_set1_epi32(-j.asum8[(m0 + r) * groups + g]);
      for (int c = 0; c < PANELS; ++c) iacc[r][c] = start;
    }
    for (int64_t b = g * per_group; b < (g + 1) * per_group; ++b) {
      __m512i lo[PANELS], hi[PANELS];
      for (int c = 0; c < PANELS; ++c) {
        const __m512i v = _mm512_loadu_si512(wp[c] + b * 64);
        lo[c] = _mm512_and_si512(v, mask);
        hi[c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
      }
      for (int r = 0; r < ROWS; ++r) {
        const int8_t* ar = j.a + (m0 + r) * K + 8 * b;
        const __m512i a0 = _mm512_set1_epi32(quad_at(ar)), a1 = _mm512_set1_epi32(quad_at(ar + 4));
        for (int c = 0; c < PANELS; ++c) {
          iacc[r][c] = _mm512_dpbusd_epi32(iacc[r][c], lo[c], a0);
          iacc[r][c] = _mm512_dpbusd_epi32(iacc[r][c], hi[c], a1);
        }
      }
    }
    for (int c = 0; c < PANELS; ++c) {
      const __m512 s = _mm512_mul_ps(a_scale, _mm512_loadu_ps(sp[c] + g * 16));
      for (int r = 0; r < ROWS; ++r) facc[r][c] = _mm512_add_ps(facc[r][c], _mm512_mul_ps(_mm512_cvtepi32_ps(iacc[r][c]), s));
    }
  }
  for (int c = 0; c < np; ++c) {
    const int64_t n0 = (p0 + c) * 16;
    const __m512 bias = j.bias ? _mm512_maskz_loadu_ps(valid[c], j.bias + n0) : _mm512_setzero_ps();
    for (int r = 0; r < ROWS; ++r) {
      __m512 v = facc[r][c];
      if (j.row_scale) v = _mm512_mul_ps(v, _mm512_set1_ps(j.row_scale[m0 + r]));
      _mm512_mask_storeu_ps(j.y + (m0 + r) * p.N + n0, valid[c], _mm512_add_ps(v, bias));
    }
  }
}

// ---- AVX2: a panel as two ymm halves (8 columns x 4 k each); vpmaddubsw(u8 weights, s8 activations), exact in int16:
// |(w + 8) * a| <= 15 * 128, so one block's two quads sum to at most 7680 in magnitude and four blocks' to 30720 < 2^15;
// the int16 sums of four blocks are widened (vpmaddwd by 1) into the group's int32 sum ----

template <int ROWS, int PANELS>
__attribute__((target("avx2"))) void tile_avx2(const Job& j, int64_t m0, int64_t p0, int np) {
  const PackedInt4& p = *j.p;
  const int64_t K = p.K, blocks = K / 8, groups = K / p.G, per_group = p.G / 8;  // per_group: 4, 8 or 16
  const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const __m256 a_scale = _mm256_set1_ps(j.a_scale);
  const uint8_t* wp[PANELS];
  const float* sp[PANELS];
  for (int c = 0; c < PANELS; ++c) {
    const int64_t panel = p0 + (c < np ? c : 0);
    wp[c] = p.data.data() + panel * blocks * 64;
    sp[c] = p.scale.data() + panel * groups * 16;
  }
  __m256 facc[ROWS][PANELS][2];
  for (int r = 0; r < ROWS; ++r)
    for (int c = 0; c < PANELS; ++c) facc[r][c][0] = facc[r][c][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m256i iacc[ROWS][PANELS][2];  // starts at -8 * (the group's activation sum), as in tile_vnni
    for (int r = 0; r < ROWS; ++r) {
      const __m256i start = _mm256_set1_epi32(-j.asum8[(m0 + r) * groups + g]);
      for (int c = 0; c < PANELS; ++c) iacc[r][c][0] = iacc[r][c][1] = start;
    }
    for (int64_t b4 = g * per_group; b4 < (g + 1) * per_group; b4 += 4) {
      __m256i sum16[ROWS][PANELS][2];
      for (int r = 0; r < ROWS; ++r)
        for (int c = 0; c < PANELS; ++c) sum16[r][c][0] = sum16[r][c][1] = _mm256_setzero_si256();
      for (int64_t b = b4; b < b4 + 4; ++b) {
        __m256i lo[PANELS][2], hi[PANELS][2];
        for (int c = 0; c < PANELS; ++c)
          for (int h = 0; h < 2; ++h) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp[c] + b * 64 + 32 * h));
            lo[c][h] = _mm256_and_si256(v, mask);
            hi[c][h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
          }
        for (int r = 0; r < ROWS; ++r) {
          const int8_t* ar = j.a + (m0 + r) * K + 8 * b;
          const __m256i a0 = _mm256_set1_epi32(quad_at(ar)), a1 = _mm256_set1_epi32(quad_at(ar + 4));
          for (int c = 0; c < PANELS; ++c)
            for (int h = 0; h < 2; ++h) {
              const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo[c][h], a0), _mm256_maddubs_epi16(hi[c][h], a1));
              sum16[r][c][h] = _mm256_add_epi16(sum16[r][c][h], pairs);
            }
        }
      }
      for (int r = 0; r < ROWS; ++r)
        for (int c = 0; c < PANELS; ++c)
          for (int h = 0; h < 2; ++h) iacc[r][c][h] = _mm256_add_epi32(iacc[r][c][h], _mm256_madd_epi16(sum16[r][c][h], ones));
    }
    for (int c = 0; c < PANELS; ++c)
      for (int h = 0; h < 2; ++h) {
        const __m256 s = _mm256_mul_ps(a_scale, _mm256_loadu_ps(sp[c] + g * 16 + 8 * h));
        for (int r = 0; r < ROWS; ++r)
          facc[r][c][h] = _mm256_add_ps(facc[r][c][h], _mm256_mul_ps(_mm256_cvtepi32_ps(iacc[r][c][h]), s));
      }
  }
  for (int c = 0; c < np; ++c) {
    const int64_t n0 = (p0 + c) * 16, valid = std::min<int64_t>(16, p.N - n0);
    for (int r = 0; r < ROWS; ++r) {
      alignas(32) float out[16];
      _mm256_store_ps(out, facc[r][c][0]);
      _mm256_store_ps(out + 8, facc[r][c][1]);
      float* yr = j.y + (m0 + r) * p.N + n0;
      const float rs = j.row_scale ? j.row_scale[m0 + r] : 1.0f;
      for (int64_t l = 0; l < valid; ++l) yr[l] = (j.row_scale ? out[l] * rs : out[l]) + (j.bias ? j.bias[n0 + l] : 0.0f);
    }
  }
}

// ---- AVX2 GEMM tile (prefill, tile_avx2_gemm): ROWS = 3 rows x one panel (16 columns, two ymm halves), the same
// arithmetic as tile_avx2 (exact int32 group sums, folded into float in group order) arranged for the 16 ymm registers and
// for CPUs whose vector multiplier is the limit (Zen 1: vpmaddubsw ymm at half a cycle's throughput):
// - one block's weights are unpacked one nibble half at a time (lo for both column halves against each row's first activation
//   quad, then hi against its second), reloading the block instead of keeping it, so the 2 x ROWS int16 sums, 2 weight
//   vectors, the broadcast and the mask fit without spilling (measured: 4 rows spill 4 sums per block and are slower);
// - each product is accumulated at once (an empty asm keeps GCC from pairing lo and hi products first, which spills);
// - with G = 32 (every recipe's group) a group is exactly four blocks, so the int32 group sums never leave registers; the
//   float accumulators live in memory, touched once per group.
// On the 2-core Zen 1 host (bench/RESULTS.md, "W4A8 on an AVX2-only host") this took one thread's packed GEMM from 45 to
// 52 GOP/s at M = 64, K = 1408, N = 256. ----

// The int16 pair sums of four blocks (32 k) from b4 on, for ROWS rows x 16 columns (s0: columns 0-7, s1: 8-15).
template <int ROWS>
__attribute__((target("avx2"), always_inline)) inline void four_blocks_avx2(const uint8_t* wp, const int8_t* const* ar, int64_t b4,
                                                                            __m256i* s0, __m256i* s1) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) s0[r] = s1[r] = _mm256_setzero_si256();
#pragma GCC unroll 4
  for (int64_t b = b4; b < b4 + 4; ++b) {
    const __m256i* w = reinterpret_cast<const __m256i*>(wp + b * 64);
    __m256i w0 = _mm256_and_si256(_mm256_loadu_si256(w), mask), w1 = _mm256_and_si256(_mm256_loadu_si256(w + 1), mask);
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
      const __m256i a = _mm256_set1_epi32(quad_at(ar[r] + 8 * b));
      s0[r] = _mm256_add_epi16(s0[r], _mm256_maddubs_epi16(w0, a));
      s1[r] = _mm256_add_epi16(s1[r], _mm256_maddubs_epi16(w1, a));
      // Keeps GCC from pairing this product with the next one before accumulating (which holds 2 x ROWS products live and
      // spills the sums): accumulate now.
      asm("" : "+x"(s0[r]), "+x"(s1[r]));
    }
    w0 = _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256(w), 4), mask);
    w1 = _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256(w + 1), 4), mask);
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
      const __m256i a = _mm256_set1_epi32(quad_at(ar[r] + 8 * b + 4));
      s0[r] = _mm256_add_epi16(s0[r], _mm256_maddubs_epi16(w0, a));
      s1[r] = _mm256_add_epi16(s1[r], _mm256_maddubs_epi16(w1, a));
    }
  }
}

template <int ROWS, bool G32>
__attribute__((target("avx2"))) void tile_avx2_gemm(const Job& j, int64_t m0, int64_t panel) {
  const PackedInt4& p = *j.p;
  const int64_t K = p.K, blocks = K / 8, groups = K / p.G, per_group = p.G / 8;  // per_group: 4, 8 or 16
  const __m256 a_scale = _mm256_set1_ps(j.a_scale);
  const __m256i ones = _mm256_set1_epi16(1);
  const uint8_t* wp = p.data.data() + panel * blocks * 64;
  const float* sp = p.scale.data() + panel * groups * 16;
  const int8_t* ar[ROWS];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) ar[r] = j.a + (m0 + r) * K;
  alignas(32) float facc[ROWS][16] = {};
  for (int64_t g = 0; g < groups; ++g) {
    __m256i i0[ROWS], i1[ROWS];  // the group's int32 sums, from -8 * (its activation sum) on, as in tile_vnni
    {
      __m256i s0[ROWS], s1[ROWS];
      four_blocks_avx2<ROWS>(wp, ar, g * per_group, s0, s1);
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
        const __m256i start = _mm256_set1_epi32(-j.asum8[(m0 + r) * groups + g]);
        i0[r] = _mm256_add_epi32(start, _mm256_madd_epi16(s0[r], ones));
        i1[r] = _mm256_add_epi32(start, _mm256_madd_epi16(s1[r], ones));
      }
    }
    for (int64_t b4 = g * per_group + 4; !G32 && b4 < (g + 1) * per_group; b4 += 4) {  // G = 64, 128
      __m256i s0[ROWS], s1[ROWS];
      four_blocks_avx2<ROWS>(wp, ar, b4, s0, s1);
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
        i0[r] = _mm256_add_epi32(i0[r], _mm256_madd_epi16(s0[r], ones));
        i1[r] = _mm256_add_epi32(i1[r], _mm256_madd_epi16(s1[r], ones));
      }
    }
    const __m256 sc0 = _mm256_mul_ps(a_scale, _mm256_loadu_ps(sp + g * 16)), sc1 = _mm256_mul_ps(a_scale, _mm256_loadu_ps(sp + g * 16 + 8));
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
      _mm256_store_ps(facc[r], _mm256_add_ps(_mm256_load_ps(facc[r]), _mm256_mul_ps(_mm256_cvtepi32_ps(i0[r]), sc0)));
      _mm256_store_ps(facc[r] + 8, _mm256_add_ps(_mm256_load_ps(facc[r] + 8), _mm256_mul_ps(_mm256_cvtepi32_ps(i1[r]), sc1)));
    }
  }
  const int64_t n0 = panel * 16, valid = std::min<int64_t>(16, p.N - n0);
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    float* yr = j.y + (m0 + r) * p.N + n0;
    const float rs = j.row_scale ? j.row_scale[m0 + r] : 1.0f;
    for (int64_t l = 0; l < valid; ++l) yr[l] = (j.row_scale ? facc[r][l] * rs : facc[r][l]) + (j.bias ? j.bias[n0 + l] : 0.0f);
  }
}

// ---- AVX-VNNI GEMM tile (VEX-encoded vpdpbusd on ymm: Intel cores since Alder Lake, AMD Zen 5): the AVX2 layout and
// arithmetic — u8 weights (w + 8) times s8 activations, exact int32 group sums from −8 · (the group's activation sum),
// folded into float in group order as tile_avx2_gemm does — with one vpdpbusd per weight vector and row instead of
// vpmaddubsw, an int16 add and, per four blocks, vpmaddwd and an int32 add. So the results are the AVX2 tile's, bit for bit.
// 4 rows x one panel: 8 int32 sums, 2 weight vectors, the mask and a broadcast in the 16 ymm registers. ----

template <int ROWS>
__attribute__((target("avx2,avxvnni"))) void tile_avxvnni_gemm(const Job& j, int64_t m0, int64_t panel) {
  const PackedInt4& p = *j.p;
  const int64_t K = p.K, blocks = K / 8, groups = K / p.G, per_group = p.G / 8;
  const __m256 a_scale = _mm256_set1_ps(j.a_scale);
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const uint8_t* wp = p.data.data() + panel * blocks * 64;
  const float* sp = p.scale.data() + panel * groups * 16;
  const int8_t* ar[ROWS];
  for (int r = 0; r < ROWS; ++r) ar[r] = j.a + (m0 + r) * K;
  alignas(32) float facc[ROWS][16] = {};
  for (int64_t g = 0; g < groups; ++g) {
    __m256i i0[ROWS], i1[ROWS];
    for (int r = 0; r < ROWS; ++r) i0[r] = i1[r] = _mm256_set1_epi32(-j.asum8[(m0 + r) * groups + g]);
    for (int64_t b = g * per_group; b < (g + 1) * per_group; ++b) {
      const __m256i* w = reinterpret_cast<const __m256i*>(wp + b * 64);
      const __m256i v0 = _mm256_loadu_si256(w), v1 = _mm256_loadu_si256(w + 1);
      const __m256i lo0 = _mm256_and_si256(v0, mask), lo1 = _mm256_and_si256(v1, mask);
      for (int r = 0; r < ROWS; ++r) {
        const __m256i a = _mm256_set1_epi32(quad_at(ar[r] + 8 * b));
        i0[r] = _mm256_dpbusd_avx_epi32(i0[r], lo0, a);
        i1[r] = _mm256_dpbusd_avx_epi32(i1[r], lo1, a);
      }
      const __m256i hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), mask), hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), mask);
      for (int r = 0; r < ROWS; ++r) {
        const __m256i a = _mm256_set1_epi32(quad_at(ar[r] + 8 * b + 4));
        i0[r] = _mm256_dpbusd_avx_epi32(i0[r], hi0, a);
        i1[r] = _mm256_dpbusd_avx_epi32(i1[r], hi1, a);
      }
    }
    const __m256 sc0 = _mm256_mul_ps(a_scale, _mm256_loadu_ps(sp + g * 16)), sc1 = _mm256_mul_ps(a_scale, _mm256_loadu_ps(sp + g * 16 + 8));
    for (int r = 0; r < ROWS; ++r) {
      _mm256_store_ps(facc[r], _mm256_add_ps(_mm256_load_ps(facc[r]), _mm256_mul_ps(_mm256_cvtepi32_ps(i0[r]), sc0)));
      _mm256_store_ps(facc[r] + 8, _mm256_add_ps(_mm256_load_ps(facc[r] + 8), _mm256_mul_ps(_mm256_cvtepi32_ps(i1[r]), sc1)));
    }
  }
  const int64_t n0 = panel * 16, valid = std::min<int64_t>(16, p.N - n0);
  for (int r = 0; r < ROWS; ++r) {
    float* yr = j.y + (m0 + r) * p.N + n0;
    const float rs = j.row_scale ? j.row_scale[m0 + r] : 1.0f;
    for (int64_t l = 0; l < valid; ++l) yr[l] = (j.row_scale ? facc[r][l] * rs : facc[r][l]) + (j.bias ? j.bias[n0 + l] : 0.0f);
  }
}

constexpr int kPanelsVnni = 2;  // GEMM: a 4 x 2-panel tile, 8 int32 + 8 float accumulators + 4 weight vectors
constexpr int kPanelsAvx2 = 1;  // GEMM: a 3 x 1-panel tile (tile_avx2_gemm)
constexpr int kRowsAvx2 = 3;

void run_vnni(void* ctx, int64_t t0, int64_t t1) {
  const Job& j = *static_cast<const Job*>(ctx);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t p0 = (t / j.row_blocks) * kPanelsVnni, m0 = (t % j.row_blocks) * kRowBlock, m1 = std::min(j.M, m0 + kRowBlock);
    const int np = static_cast<int>(std::min<int64_t>(kPanelsVnni, j.p->panels - p0));
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) tile_vnni<4, kPanelsVnni>(j, m, p0, np);
    switch (m1 - m) {
      case 3: tile_vnni<3, kPanelsVnni>(j, m, p0, np); break;
      case 2: tile_vnni<2, kPanelsVnni>(j, m, p0, np); break;
      case 1: tile_vnni<1, kPanelsVnni>(j, m, p0, np); break;
      default: break;
    }
  }
}

template <bool G32>
void avx2_rows(const Job& j, int64_t m0, int64_t m1, int64_t panel) {
  int64_t m = m0;
  for (; m + kRowsAvx2 <= m1; m += kRowsAvx2) tile_avx2_gemm<kRowsAvx2, G32>(j, m, panel);
  switch (m1 - m) {
    case 3: tile_avx2_gemm<3, G32>(j, m, panel); break;
    case 2: tile_avx2_gemm<2, G32>(j, m, panel); break;
    case 1: tile_avx2_gemm<1, G32>(j, m, panel); break;
    default: break;
  }
}

void avxvnni_rows(const Job& j, int64_t m0, int64_t m1, int64_t panel) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) tile_avxvnni_gemm<4>(j, m, panel);
  switch (m1 - m) {
    case 3: tile_avxvnni_gemm<3>(j, m, panel); break;
    case 2: tile_avxvnni_gemm<2>(j, m, panel); break;
    case 1: tile_avxvnni_gemm<1>(j, m, panel); break;
    default: break;
  }
}

void run_avx2(void* ctx, int64_t t0, int64_t t1) {
  const Job& j = *static_cast<const Job*>(ctx);
  const bool vnni = avx_vnni_in_use();
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t panel = t / j.row_blocks, m0 = (t % j.row_blocks) * kRowBlock, m1 = std::min(j.M, m0 + kRowBlock);
    if (vnni) avxvnni_rows(j, m0, m1, panel);
    else if (j.p->G == 32) avx2_rows<true>(j, m0, m1, panel);
    else avx2_rows<false>(j, m0, m1, panel);
  }
}

// ---- GEMV (decode, M <= gemv_max_rows()): all M rows in one tile, so every packed weight vector is loaded once per call
// and the weight streams through the cache once; up to 4 (VNNI) or 2 (AVX2) panels per tile for independent accumulator
// chains, fewer when that would leave threads without work. Work items are panel groups. ----

using Tile = void (*)(const Job&, int64_t, int64_t, int);

template <int PANELS>
Tile gemv_tile(Isa isa, int64_t rows) {
  if (isa == Isa::Avx512Vnni) {
    if constexpr (PANELS <= 4) {
      constexpr Tile vnni[4] = {tile_vnni<1, PANELS>, tile_vnni<2, PANELS>, tile_vnni<3, PANELS>, tile_vnni<4, PANELS>};
      return vnni[rows - 1];
    }
  }
  if constexpr (PANELS <= 2) {
    constexpr Tile avx2[4] = {tile_avx2<1, PANELS>, tile_avx2<2, PANELS>, tile_avx2<3, PANELS>, tile_avx2<4, PANELS>};
    return avx2[rows - 1];
  }
  return nullptr;
}

struct GemvJob {
  const Job* job;
  Tile tile;
  int per;
};

void run_gemv(void* ctx, int64_t t0, int64_t t1) {
  const GemvJob& g = *static_cast<const GemvJob*>(ctx);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t p0 = t * g.per;
    g.tile(*g.job, 0, p0, static_cast<int>(std::min<int64_t>(g.per, g.job->p->panels - p0)));
  }
}

void gemv(const Job& job, Isa isa) {
  const PackedInt4& p = *job.p;
  const int64_t threads = parallel_threads();
  int per = isa == Isa::Avx512Vnni ? 4 : 2;
  while (per > 1 && (p.panels + per - 1) / per < 2 * threads) per /= 2;  // at least two panel groups per thread
  const Tile tile = per == 4 ? gemv_tile<4>(isa, job.M) : per == 2 ? gemv_tile<2>(isa, job.M) : gemv_tile<1>(isa, job.M);
  GemvJob g{&job, tile, per};
  parallel_for((p.panels + per - 1) / per, job.M * p.K * 16 * per, run_gemv, &g);
}

}  // namespace

int64_t gemv_max_rows() {
  static const int64_t rows = [] {
    const char* e = std::getenv("QUANTC_INT4_GEMV_ROWS");
    const int64_t v = e ? std::atoll(e) : kGemvMaxRows;
    return std::clamp<int64_t>(v, 0, 4);
  }();
  return rows;
}

namespace {

// ---- per-call row preparation: the per-token quantization of a float A, and 8 * (group sums of A) ----

void group_sums8_ref(const int8_t* a, int64_t K, int64_t G, int32_t* out) {
  for (int64_t g = 0; g < K / G; ++g) {
    int32_t s = 0;
    for (int64_t k = g * G; k < (g + 1) * G; ++k) s += a[k];
    out[g] = 8 * s;
  }
}

// G is a multiple of 32: vpmaddubsw(1, a) sums byte pairs into int16, vpmaddwd(.., 1) pairs of those into int32.
__attribute__((target("avx2"))) void group_sums8_avx2(const int8_t* a, int64_t K, int64_t G, int32_t* out) {
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  for (int64_t g = 0; g < K / G; ++g) {
    __m256i acc = _mm256_setzero_si256();
    for (int64_t k = g * G; k < (g + 1) * G; k += 32) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k));
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    out[g] = 8 * _mm_cvtsi128_si32(s);
  }
}

struct Prep {
  const float* x;   // float A (per-token dynamic), or null
  const int8_t* a;  // int8 A when x is null; else the quantized rows are written to q
  int8_t* q;
  float* s;
  int32_t* asum8;
  int64_t K, G;
  Isa isa;
  RowHadamard hadamard;  // float A: each row transformed before its quantization
};

constexpr int64_t kHadamardRows = 16;  // rows per hadamard_transform_rows call (it sets up H_m on each call)

void prep_rows(void* ctx, int64_t m0, int64_t m1) {
  const Prep& j = *static_cast<const Prep*>(ctx);
  static thread_local std::vector<float> rotated;  // this thread's transformed rows (kHadamardRows at a time)
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* row = j.a + m * j.K;
    if (j.x) {
      const float* xr = j.x + m * j.K;
      if (j.hadamard != RowHadamard::None) {
        const int64_t at = (m - m0) % kHadamardRows;
        if (at == 0) {
          const int64_t rows = std::min(kHadamardRows, m1 - m);
          rotated.resize(static_cast<size_t>(rows * j.K));
          hadamard_transform_rows(xr, rotated.data(), rows, j.K, j.hadamard == RowHadamard::Normalized, j.isa);
        }
        xr = rotated.data() + at * j.K;
      }
      j.s[m] = row_scale_int8(xr, j.K, j.isa);
      quantize_int8(xr, j.K, j.s[m], j.q + m * j.K, j.isa);
      row = j.q + m * j.K;
    }
    if (j.isa == Isa::Reference) group_sums8_ref(row, j.K, j.G, j.asum8 + m * (j.K / j.G));
    else group_sums8_avx2(row, j.K, j.G, j.asum8 + m * (j.K / j.G));
  }
}

// The calling thread's buffers, reused from call to call (they only grow).
struct Scratch {
  std::vector<int8_t> q;
  std::vector<float> s;
  std::vector<int32_t> asum8;
};

Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

void gemm(const Prep& prep, const PackedInt4& p, int64_t M, float a_scale, const float* bias, float* y, Isa isa) {
  if (isa == Isa::Reference) throw std::invalid_argument("matmul_int4_int8_packed needs the AVX2 or the AVX-512 VNNI path");
  if (M <= 0 || p.N == 0) return;
  const int64_t prep_work = prep.x ? (prep.hadamard != RowHadamard::None ? 12 : 4) * p.K : p.K / 4;
  parallel_for(M, prep_work, prep_rows, const_cast<Prep*>(&prep));
  const int64_t row_blocks = (M + kRowBlock - 1) / kRowBlock;
  Job job{prep.x ? prep.q : prep.a, prep.asum8, prep.x ? prep.s : nullptr, &p, M, a_scale, bias, y, row_blocks};
  if (M <= gemv_max_rows()) {
    gemv(job, isa);
    return;
  }
  const int64_t per = isa == Isa::Avx512Vnni ? kPanelsVnni : kPanelsAvx2;
  const int64_t items = (p.panels + per - 1) / per * row_blocks;
  const int64_t work = std::min(M, kRowBlock) * p.K * 16 * per;
  parallel_for(items, work, isa == Isa::Avx512Vnni ? run_vnni : run_avx2, &job);
}

}  // namespace

void matmul_int4_int8_packed(const int8_t* a, const PackedInt4& p, int64_t M, float a_scale, const float* bias, float* y, Isa isa) {
  Scratch& sc = scratch();
  sc.asum8.resize(static_cast<size_t>(std::max<int64_t>(M, 0) * (p.K / p.G)));
  gemm(Prep{nullptr, a, nullptr, nullptr, sc.asum8.data(), p.K, p.G, isa, RowHadamard::None}, p, M, a_scale, bias, y, isa);
}

void matmul_int4_f32_packed(const float* x, const PackedInt4& p, int64_t M, float a_scale, const float* bias, float* y, Isa isa,
                            RowHadamard hadamard) {
  int64_t pow2 = 0;
  int order = 0;
  if (hadamard != RowHadamard::None && !hadamard_split(p.K, &pow2, &order))
    throw std::invalid_argument("MatMulInt4Int8: no Hadamard transform of order K = " + std::to_string(p.K));
  Scratch& sc = scratch();
  const size_t rows = static_cast<size_t>(std::max<int64_t>(M, 0));
  sc.q.resize(rows * static_cast<size_t>(p.K));
  sc.s.resize(rows);
  sc.asum8.resize(rows * static_cast<size_t>(p.K / p.G));
  gemm(Prep{x, nullptr, sc.q.data(), sc.s.data(), sc.asum8.data(), p.K, p.G, isa, hadamard}, p, M, a_scale, bias, y, isa);
}

}  // namespace quantc
