// SwiGLU rows (quantc/swiglu.h): scalar, AVX2 + FMA and AVX-512F paths.
// GCC 12's AVX-512 headers trip -Wuninitialized on their own temporaries (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cmath>

#include "quantc/swiglu.h"

namespace quantc {

namespace {

inline float silu_times(float g, float u) { return g / (1.0f + std::exp(-g)) * u; }

void rows_ref(const float* x, int64_t F, int gate, float* y, int64_t m0, int64_t m1) {
  for (int64_t m = m0; m < m1; ++m) {
    const float* g = x + m * 2 * F + gate * F;
    const float* u = x + m * 2 * F + (1 - gate) * F;
    for (int64_t f = 0; f < F; ++f) y[m * F + f] = silu_times(g[f], u[f]);
  }
}

}  // namespace

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
namespace {
#include "simd_v_avx2.inc"
using f = V::f;
#include "simd_exp.inc"
}  // namespace
#include "swiglu_simd.inc"
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
namespace {
#include "simd_v_avx512.inc"
using f = V::f;
#include "simd_exp.inc"
}  // namespace
#include "swiglu_simd.inc"
}  // namespace avx512
#pragma GCC pop_options

namespace {

struct Job {
  const float* x;
  int64_t F;
  int gate;
  float* y;
  Isa isa;
};

void run(void* ctx, int64_t m0, int64_t m1) {
  const Job& j = *static_cast<const Job*>(ctx);
  if (j.isa == Isa::Avx512Vnni) avx512::rows(j.x, j.F, j.gate, j.y, m0, m1);
  else if (j.isa == Isa::Avx2) avx2::rows(j.x, j.F, j.gate, j.y, m0, m1);
  else rows_ref(j.x, j.F, j.gate, j.y, m0, m1);
}

}  // namespace

void swiglu(const float* x, int64_t M, int64_t F, int gate, float* y, Isa isa) {
  static const bool fma = [] { __builtin_cpu_init(); return __builtin_cpu_supports("fma") != 0; }();
  if (isa == Isa::Avx2 && !fma) isa = Isa::Reference;
  Job job{x, F, gate != 0 ? 1 : 0, y, isa};
  parallel_for(M, 16 * F, run, &job);
}

}  // namespace quantc
