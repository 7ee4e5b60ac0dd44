// GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_* temporaries
// (GCC bug 105593); the warning is about the header, not this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "quantc/gemm.h"

namespace quantc {

Isa best_isa() {
  static const Isa isa = [] {
    Isa best = Isa::Reference;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) best = Isa::Avx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni"))
      best = Isa::Avx512Vnni;
    if (const char* cap = std::getenv("QUANTC_ISA")) {
      if (std::strcmp(cap, "reference") == 0) best = Isa::Reference;
      else if (std::strcmp(cap, "avx2") == 0 && best != Isa::Reference) best = Isa::Avx2;
    }
    return best;
  }();
  return isa;
}

namespace {
// -1: as detected (avx_vnni_present() and no QUANTC_AVXVNNI=0); 0 / 1: set by set_avx_vnni.
std::atomic<int> g_avx_vnni{-1};
}  // namespace

bool avx_vnni_present() {
  static const bool present = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    // CPUID leaf 7, sub-leaf 1: EAX bit 4 = AVX-VNNI (the VEX encoding of vpdpbusd on xmm / ymm).
    return __builtin_cpu_supports("avx2") && __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1) != 0;
  }();
  return present;
}

bool avx_vnni_in_use() {
  const int forced = g_avx_vnni.load(std::memory_order_relaxed);
  if (forced >= 0) return forced == 1 && avx_vnni_present();
  static const bool on = [] {
    const char* env = std::getenv("QUANTC_AVXVNNI");
    return avx_vnni_present() && !(env && std::strcmp(env, "0") == 0);
  }();
  return on;
}

void set_avx_vnni(int mode) { g_avx_vnni.store(mode < 0 ? -1 : mode > 0 ? 1 : 0, std::memory_order_relaxed); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx2: return "avx2";
    case Isa::Avx512Vnni: return "avx512vnni";
    default: return "reference";
  }
}

namespace {

thread_local ParallelRunner t_runner = nullptr;
thread_local void* t_host = nullptr;

struct Chunks {
  void (*fn)(void*, int64_t, int64_t);
  void* ctx;
  int64_t count, chunk;
};

void run_chunk(void* p, int64_t i) {
  const Chunks& c = *static_cast<const Chunks*>(p);
  c.fn(c.ctx, i * c.chunk, std::min(c.count, (i + 1) * c.chunk));
}

}  // namespace

ScopedParallelRunner::ScopedParallelRunner(ParallelRunner runner, void* host) : saved_runner_(t_runner), saved_host_(t_host) {
  t_runner = runner;
  t_host = host;
}

ScopedParallelRunner::~ScopedParallelRunner() {
  t_runner = saved_runner_;
  t_host = saved_host_;
}

int parallel_threads() {
  static const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return threads;
}

void parallel_for(int64_t count, int64_t work_per_item, void (*fn)(void*, int64_t, int64_t), void* ctx, int pieces_per_thread) {
  const int64_t total = count * std::max<int64_t>(work_per_item, 1);
  int threads = static_cast<int>(std::min<int64_t>(parallel_threads(), count));
  if (total < (1 << 18) || threads <= 1) { fn(ctx, 0, count); return; }
  const int64_t chunk = (count + threads - 1) / threads;
  if (t_runner) {
    const int64_t pieces = std::min<int64_t>(count, static_cast<int64_t>(threads) * std::max(1, pieces_per_thread));
    Chunks c{fn, ctx, count, (count + pieces - 1) / pieces};
    t_runner(t_host, (count + c.chunk - 1) / c.chunk, run_chunk, &c);
    return;
  }
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) {
    int64_t b = t * chunk, e = std::min(count, b + chunk);
    if (b < e) pool.emplace_back(fn, ctx, b, e);
  }
  fn(ctx, 0, std::min(count, chunk));
  for (auto& th : pool) th.join();
}

namespace {

int32_t dot_ref(const int8_t* a, const int8_t* b, int64_t K) {
  int32_t s = 0;
  for (int64_t k = 0; k < K; ++k) s += static_cast<int32_t>(a[k]) * b[k];
  return s;
}

__attribute__((target("avx2"))) int32_t hsum256(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Four dot products of one A row with four B rows: sign-extend to int16, multiply-add to int32 (exact).
__attribute__((target("avx2"))) void dot4_avx2(const int8_t* a, const int8_t* b0, const int8_t* b1, const int8_t* b2,
                                               const int8_t* b3, int64_t K, int32_t* out) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256i va = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + k)));
    s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(va, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + k)))));
    s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(va, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b1 + k)))));
    s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(va, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b2 + k)))));
    s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(va, _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b3 + k)))));
  }
  out[0] = hsum256(s0) + dot_ref(a + k, b0 + k, K - k);
  out[1] = hsum256(s1) + dot_ref(a + k, b1 + k, K - k);
  out[2] = hsum256(s2) + dot_ref(a + k, b2 + k, K - k);
  out[3] = hsum256(s3) + dot_ref(a + k, b3 + k, K - k);
}

__attribute__((target("avx512f,avx512bw"))) int32_t hsum512(__m512i v) {
  return hsum256(_mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)));
}

// VNNI multiplies unsigned by signed bytes: feed a + 128 (as u8) and subtract 128 * sum(b) afterwards.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void dot4_vnni(const uint8_t* a_u8, const int8_t* b0, const int8_t* b1,
                                                                       const int8_t* b2, const int8_t* b3, int64_t K, int32_t* out) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    __m512i va = _mm512_loadu_si512(a_u8 + k);
    s0 = _mm512_dpbusd_epi32(s0, va, _mm512_loadu_si512(b0 + k));
    s1 = _mm512_dpbusd_epi32(s1, va, _mm512_loadu_si512(b1 + k));
    s2 = _mm512_dpbusd_epi32(s2, va, _mm512_loadu_si512(b2 + k));
    s3 = _mm512_dpbusd_epi32(s3, va, _mm512_loadu_si512(b3 + k));
  }
  int32_t r[4] = {hsum512(s0), hsum512(s1), hsum512(s2), hsum512(s3)};
  const int8_t* bs[4] = {b0, b1, b2, b3};
  for (int j = 0; j < 4; ++j) {
    int32_t tail = 0;
    for (int64_t t = k; t < K; ++t) tail += static_cast<int32_t>(a_u8[t]) * bs[j][t];
    out[j] = r[j] + tail;
  }
}

struct Job {
  const int8_t* a;
  const int8_t* b;
  int64_t N, K;
  Isa isa;
  const int32_t* bsum;  // sum_k b[n][k], for the VNNI offset correction
  int32_t* acc;
};

void run_rows(void* p, int64_t m0, int64_t m1) {
  auto& j = *static_cast<Job*>(p);
  std::vector<uint8_t> au8(j.isa == Isa::Avx512Vnni ? j.K : 0);
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* a = j.a + m * j.K;
    int32_t* acc = j.acc + m * j.N;
    if (j.isa == Isa::Avx512Vnni)
      for (int64_t k = 0; k < j.K; ++k) au8[k] = static_cast<uint8_t>(a[k] + 128);
    int64_t n = 0;
    for (; n + 4 <= j.N && j.isa != Isa::Reference; n += 4) {
      const int8_t* b = j.b + n * j.K;
      if (j.isa == Isa::Avx512Vnni) {
        dot4_vnni(au8.data(), b, b + j.K, b + 2 * j.K, b + 3 * j.K, j.K, acc + n);
        for (int t = 0; t < 4; ++t) acc[n + t] -= 128 * j.bsum[n + t];
      } else {
        dot4_avx2(a, b, b + j.K, b + 2 * j.K, b + 3 * j.K, j.K, acc + n);
      }
    }
    for (; n < j.N; ++n) acc[n] = dot_ref(a, j.b + n * j.K, j.K);
  }
}

}  // namespace

void matmul_int8_accumulate(const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K, int32_t* acc, Isa isa) {
  std::vector<int32_t> bsum;
  if (isa == Isa::Avx512Vnni) {
    bsum.resize(N);
    for (int64_t n = 0; n < N; ++n) {
      int32_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += b[n * K + k];
      bsum[n] = s;
    }
  }
  Job job{a, b, N, K, isa, bsum.data(), acc};
  parallel_for(M, N * K, run_rows, &job);
}

void matmul_int8(const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K, float a_scale, const float* b_scale,
                 const float* bias, float* y, Isa isa) {
  if (isa == Isa::Avx512Vnni) {
    matmul_int8_vnni_packed(a, pack_b_vnni(b, N, K), M, a_scale, b_scale, bias, y);
    return;
  }
  std::vector<int32_t> acc(static_cast<size_t>(M * N));
  matmul_int8_accumulate(a, b, M, N, K, acc.data(), isa);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      y[m * N + n] = static_cast<float>(acc[m * N + n]) * (a_scale * b_scale[n]) + (bias ? bias[n] : 0.0f);
}

}  // namespace quantc
