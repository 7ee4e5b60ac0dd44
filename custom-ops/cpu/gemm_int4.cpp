// GCC 12's AVX-512 headers trip -Wuninitialized on their own temporaries (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <stdexcept>
#include <vector>

#include "quantc/gemm.h"

namespace quantc {

void pack_int4_chunked(const int8_t* w, int64_t N, int64_t K, uint8_t* packed) {
  if (K % 64) throw std::invalid_argument("int4 packing needs K % 64 == 0");
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < K / 64; ++c)
      for (int j = 0; j < 32; ++j) {
        uint8_t lo = static_cast<uint8_t>(w[n * K + 64 * c + j]) & 0xF;
        uint8_t hi = static_cast<uint8_t>(w[n * K + 64 * c + 32 + j]) & 0xF;
        packed[n * (K / 2) + 32 * c + j] = static_cast<uint8_t>(lo | (hi << 4));
      }
}

namespace {

inline int nib(uint8_t byte, bool high) {
  int v = high ? (byte >> 4) : (byte & 0xF);
  return v >= 8 ? v - 16 : v;
}

// Sums of 32 consecutive k's ("half chunks"): s[h] = sum_{k in half h} a[k] * w[k].
void half_sums_ref(const int8_t* a, const uint8_t* w, int64_t K, int32_t* s) {
  for (int64_t c = 0; c < K / 64; ++c) {
    int32_t lo = 0, hi = 0;
    for (int j = 0; j < 32; ++j) {
      uint8_t byte = w[32 * c + j];
      lo += a[64 * c + j] * nib(byte, false);
      hi += a[64 * c + 32 + j] * nib(byte, true);
    }
    s[2 * c] = lo;
    s[2 * c + 1] = hi;
  }
}

__attribute__((target("avx2"))) int32_t hsum256_i4(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// a_u8 = a + 128; the caller subtracts 128 * (sum of the half's weights).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void half_sums_vnni(const uint8_t* a_u8, const uint8_t* w, int64_t K, int32_t* s) {
  const __m256i mask = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
  for (int64_t c = 0; c < K / 64; ++c) {
    __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * c));
    __m256i lo = _mm256_sub_epi8(_mm256_xor_si256(_mm256_and_si256(packed, mask), eight), eight);
    __m256i hi = _mm256_sub_epi8(_mm256_xor_si256(_mm256_and_si256(_mm256_srli_epi16(packed, 4), mask), eight), eight);
    __m256i alo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a_u8 + 64 * c));
    __m256i ahi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a_u8 + 64 * c + 32));
    s[2 * c] = hsum256_i4(_mm256_dpbusd_epi32(_mm256_setzero_si256(), alo, lo));
    s[2 * c + 1] = hsum256_i4(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ahi, hi));
  }
}

// Σ x·y over 32 int8 pairs, as 8 int32 partial sums (sign-extended to int16 first: exact).
__attribute__((target("avx2"))) inline __m256i dot32(__m256i x, __m256i y) {
  __m256i x0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x)), x1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(x, 1));
  __m256i y0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(y)), y1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(y, 1));
  return _mm256_add_epi32(_mm256_madd_epi16(x0, y0), _mm256_madd_epi16(x1, y1));
}

// AVX2: unpack 32 packed bytes into two runs of 32 int4 values, sign-extend to int16 and multiply-add.
__attribute__((target("avx2"))) void half_sums_avx2(const int8_t* a, const uint8_t* w, int64_t K, int32_t* s) {
  const __m256i mask = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
  for (int64_t c = 0; c < K / 64; ++c) {
    __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * c));
    __m256i lo = _mm256_sub_epi8(_mm256_xor_si256(_mm256_and_si256(packed, mask), eight), eight);
    __m256i hi = _mm256_sub_epi8(_mm256_xor_si256(_mm256_and_si256(_mm256_srli_epi16(packed, 4), mask), eight), eight);
    __m256i alo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 64 * c));
    __m256i ahi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 64 * c + 32));
    s[2 * c] = hsum256_i4(dot32(alo, lo));
    s[2 * c + 1] = hsum256_i4(dot32(ahi, hi));
  }
}

struct Job {
  const int8_t* a;
  const uint8_t* w;
  int64_t N, K, G;
  float a_scale;
  const float* w_scale;
  const float* bias;
  float* y;
  Isa isa;
  const int32_t* wsum;  // per (n, half chunk): sum of weights, for the VNNI offset
};

void run_rows(void* p, int64_t m0, int64_t m1) {
  const Job& j = *static_cast<const Job*>(p);
  const int64_t halves = j.K / 32, groups = j.K / j.G, per_group = j.G / 32;
  std::vector<int32_t> s(halves);
  std::vector<uint8_t> au8(j.isa == Isa::Avx512Vnni ? j.K : 0);
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* a = j.a + m * j.K;
    if (j.isa == Isa::Avx512Vnni)
      for (int64_t k = 0; k < j.K; ++k) au8[k] = static_cast<uint8_t>(a[k] + 128);
    for (int64_t n = 0; n < j.N; ++n) {
      const uint8_t* w = j.w + n * (j.K / 2);
      if (j.isa == Isa::Avx512Vnni) {
        half_sums_vnni(au8.data(), w, j.K, s.data());
        for (int64_t h = 0; h < halves; ++h) s[h] -= 128 * j.wsum[n * halves + h];
      } else if (j.isa == Isa::Avx2) {
        half_sums_avx2(a, w, j.K, s.data());
      } else {
        half_sums_ref(a, w, j.K, s.data());
      }
      float acc = 0.f;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t gs = 0;
        for (int64_t h = 0; h < per_group; ++h) gs += s[g * per_group + h];
        acc += static_cast<float>(gs) * (j.a_scale * j.w_scale[n * groups + g]);
      }
      j.y[m * j.N + n] = acc + (j.bias ? j.bias[n] : 0.f);
    }
  }
}

}  // namespace

void matmul_int4_int8(const int8_t* a, const uint8_t* w, int64_t M, int64_t N, int64_t K, int64_t group_size, float a_scale,
                      const float* w_scale, const float* bias, float* y, Isa isa) {
  if (K % 64) throw std::invalid_argument("MatMulInt4Int8 needs K % 64 == 0");
  if (group_size != 32 && group_size != 64 && group_size != 128) throw std::invalid_argument("group_size must be 32, 64 or 128");
  if (K % group_size) throw std::invalid_argument("K must be a multiple of group_size");
  std::vector<int32_t> wsum;
  const int64_t halves = K / 32;
  if (isa == Isa::Avx512Vnni) {
    wsum.assign(N * halves, 0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < K / 64; ++c)
        for (int jj = 0; jj < 32; ++jj) {
          uint8_t byte = w[n * (K / 2) + 32 * c + jj];
          wsum[n * halves + 2 * c] += nib(byte, false);
          wsum[n * halves + 2 * c + 1] += nib(byte, true);
        }
  }
  Job job{a, w, N, K, group_size, a_scale, w_scale, bias, y, isa, wsum.data()};
  parallel_for(M, N * K, run_rows, &job);
}

}  // namespace quantc
