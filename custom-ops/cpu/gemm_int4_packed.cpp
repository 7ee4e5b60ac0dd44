// MatMulInt4Int8 as a packed, register-blocked GEMM (AVX-512 VNNI and AVX2), see PackedInt4 in gemm.h.
// Built with -ffp-contract=off: the per-group fold must round like the reference (no fused multiply-add).
// GCC 12's AVX-512 headers trip -Wuninitialized on their own temporaries (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "quantc/gemm.h"
#include "quantc/quantize.h"

namespace quantc {

namespace {

// The biased weight (w + 8, in [0, 15]) of column n at k, read from the chunked int4 layout.
inline uint8_t biased_nibble(const uint8_t* w, int64_t K, int64_t n, int64_t k) {
  const uint8_t byte = w[n * (K / 2) + 32 * (k / 64) + k % 32];
  const uint8_t nib = (k % 64) < 32 ? (byte & 0xF) : (byte >> 4);
  return static_cast<uint8_t>(nib ^ 8);  // two's-complement int4 v -> v + 8
}

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
  for (int64_t n = 0; n < N; ++n) {
    const int64_t panel = n / 16, lane = n % 16;
    for (int64_t b = 0; b < blocks; ++b)
      for (int i = 0; i < 4; ++i) {
        const uint8_t lo = biased_nibble(w, K, n, 8 * b + i), hi = biased_nibble(w, K, n, 8 * b + 4 + i);
        p.data[static_cast<size_t>((panel * blocks + b) * 64 + lane * 4 + i)] = static_cast<uint8_t>(lo | (hi << 4));
      }
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
    __m512i iacc[ROWS][PANELS];
    for (int r = 0; r < ROWS; ++r)
      for (int c = 0; c < PANELS; ++c) iacc[r][c] = _mm512_setzero_si512();
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
      for (int r = 0; r < ROWS; ++r) {
        const __m512i exact = _mm512_sub_epi32(iacc[r][c], _mm512_set1_epi32(j.asum8[(m0 + r) * groups + g]));
        facc[r][c] = _mm512_add_ps(facc[r][c], _mm512_mul_ps(_mm512_cvtepi32_ps(exact), s));
      }
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

// ---- AVX2: one panel as two ymm halves (8 columns x 4 k each); vpmaddubsw(u8 weights, s8 activations),
// exact in int16: |(w + 8) * a| <= 15 * 128, and the four products of two blocks' quads sum to <= 7680 ----

template <int ROWS>
__attribute__((target("avx2"))) void tile_avx2(const Job& j, int64_t m0, int64_t panel) {
  const PackedInt4& p = *j.p;
  const int64_t K = p.K, blocks = K / 8, groups = K / p.G, per_group = p.G / 8;
  const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  const __m256 a_scale = _mm256_set1_ps(j.a_scale);
  const uint8_t* wp = p.data.data() + panel * blocks * 64;
  const float* sp = p.scale.data() + panel * groups * 16;
  const int64_t n0 = panel * 16, valid = std::min<int64_t>(16, p.N - n0);
  __m256 facc[ROWS][2];
  for (int r = 0; r < ROWS; ++r) facc[r][0] = facc[r][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m256i iacc[ROWS][2];
    for (int r = 0; r < ROWS; ++r) iacc[r][0] = iacc[r][1] = _mm256_setzero_si256();
    for (int64_t b = g * per_group; b < (g + 1) * per_group; ++b) {
      __m256i lo[2], hi[2];
      for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + b * 64 + 32 * h));
        lo[h] = _mm256_and_si256(v, mask);
        hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
      }
      for (int r = 0; r < ROWS; ++r) {
        const int8_t* ar = j.a + (m0 + r) * K + 8 * b;
        const __m256i a0 = _mm256_set1_epi32(quad_at(ar)), a1 = _mm256_set1_epi32(quad_at(ar + 4));
        for (int h = 0; h < 2; ++h) {
          const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo[h], a0), _mm256_maddubs_epi16(hi[h], a1));
          iacc[r][h] = _mm256_add_epi32(iacc[r][h], _mm256_madd_epi16(pairs, ones));
        }
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 s = _mm256_mul_ps(a_scale, _mm256_loadu_ps(sp + g * 16 + 8 * h));
      for (int r = 0; r < ROWS; ++r) {
        const __m256i exact = _mm256_sub_epi32(iacc[r][h], _mm256_set1_epi32(j.asum8[(m0 + r) * groups + g]));
        facc[r][h] = _mm256_add_ps(facc[r][h], _mm256_mul_ps(_mm256_cvtepi32_ps(exact), s));
      }
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    alignas(32) float out[16];
    _mm256_store_ps(out, facc[r][0]);
    _mm256_store_ps(out + 8, facc[r][1]);
    float* yr = j.y + (m0 + r) * p.N + n0;
    const float rs = j.row_scale ? j.row_scale[m0 + r] : 1.0f;
    for (int64_t l = 0; l < valid; ++l) yr[l] = (j.row_scale ? out[l] * rs : out[l]) + (j.bias ? j.bias[n0 + l] : 0.0f);
  }
}

constexpr int kPanelsVnni = 2;      // a 4 x 2-panel tile: 8 int32 + 8 float accumulators + 4 weight vectors
constexpr int kPanelsVnniGemv = 4;  // one row (decode): 4 panels for independent chains, the weights streamed once

template <int PANELS>
void rows_vnni(const Job& j, int64_t m0, int64_t m1, int64_t p0, int np) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) tile_vnni<4, PANELS>(j, m, p0, np);
  switch (m1 - m) {
    case 3: tile_vnni<3, PANELS>(j, m, p0, np); break;
    case 2: tile_vnni<2, PANELS>(j, m, p0, np); break;
    case 1: tile_vnni<1, PANELS>(j, m, p0, np); break;
    default: break;
  }
}

void run_vnni(void* ctx, int64_t t0, int64_t t1) {
  const Job& j = *static_cast<const Job*>(ctx);
  const int per = j.M == 1 ? kPanelsVnniGemv : kPanelsVnni;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t p0 = (t / j.row_blocks) * per, m0 = (t % j.row_blocks) * kRowBlock;
    const int np = static_cast<int>(std::min<int64_t>(per, j.p->panels - p0));
    const int64_t m1 = std::min(j.M, m0 + kRowBlock);
    if (j.M == 1) tile_vnni<1, kPanelsVnniGemv>(j, 0, p0, np);
    else rows_vnni<kPanelsVnni>(j, m0, m1, p0, np);
  }
}

void run_avx2(void* ctx, int64_t t0, int64_t t1) {
  const Job& j = *static_cast<const Job*>(ctx);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t panel = t / j.row_blocks, m0 = (t % j.row_blocks) * kRowBlock, m1 = std::min(j.M, m0 + kRowBlock);
    int64_t m = m0;
    for (; m + 3 <= m1; m += 3) tile_avx2<3>(j, m, panel);
    switch (m1 - m) {
      case 2: tile_avx2<2>(j, m, panel); break;
      case 1: tile_avx2<1>(j, m, panel); break;
      default: break;
    }
  }
}

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
};

void prep_rows(void* ctx, int64_t m0, int64_t m1) {
  const Prep& j = *static_cast<const Prep*>(ctx);
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* row = j.a + m * j.K;
    if (j.x) {
      j.s[m] = row_scale_int8(j.x + m * j.K, j.K, j.isa);
      quantize_int8(j.x + m * j.K, j.K, j.s[m], j.q + m * j.K, j.isa);
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
  parallel_for(M, prep.x ? 4 * p.K : p.K / 4, prep_rows, const_cast<Prep*>(&prep));
  const int64_t row_blocks = (M + kRowBlock - 1) / kRowBlock;
  Job job{prep.x ? prep.q : prep.a, prep.asum8, prep.x ? prep.s : nullptr, &p, M, a_scale, bias, y, row_blocks};
  const int64_t per = isa == Isa::Avx512Vnni ? (M == 1 ? kPanelsVnniGemv : kPanelsVnni) : 1;
  const int64_t items = (p.panels + per - 1) / per * row_blocks;
  const int64_t work = std::min(M, kRowBlock) * p.K * 16 * per;
  parallel_for(items, work, isa == Isa::Avx512Vnni ? run_vnni : run_avx2, &job);
}

}  // namespace

void matmul_int4_int8_packed(const int8_t* a, const PackedInt4& p, int64_t M, float a_scale, const float* bias, float* y, Isa isa) {
  Scratch& sc = scratch();
  sc.asum8.resize(static_cast<size_t>(std::max<int64_t>(M, 0) * (p.K / p.G)));
  gemm(Prep{nullptr, a, nullptr, nullptr, sc.asum8.data(), p.K, p.G, isa}, p, M, a_scale, bias, y, isa);
}

void matmul_int4_f32_packed(const float* x, const PackedInt4& p, int64_t M, float a_scale, const float* bias, float* y, Isa isa) {
  Scratch& sc = scratch();
  const size_t rows = static_cast<size_t>(std::max<int64_t>(M, 0));
  sc.q.resize(rows * static_cast<size_t>(p.K));
  sc.s.resize(rows);
  sc.asum8.resize(rows * static_cast<size_t>(p.K / p.G));
  gemm(Prep{x, nullptr, sc.q.data(), sc.s.data(), sc.asum8.data(), p.K, p.G, isa}, p, M, a_scale, bias, y, isa);
}

}  // namespace quantc
