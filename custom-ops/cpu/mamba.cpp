#include "quantc/mamba.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "mamba_simd.h"
#include "quantc/gemm.h"

namespace quantc {

bool mamba_avx512_enabled() {
  static const bool on = [] { const char* v = std::getenv("QUANTC_MAMBA_AVX512"); return !(v && std::strcmp(v, "0") == 0); }();
  return on;
}

namespace {

inline float softplus(float v) { return v > 20.f ? v : std::log1p(std::exp(v)); }
inline float silu(float v) { return v / (1.f + std::exp(-v)); }

void scan_rows(void* p, int64_t r0, int64_t r1) {
  const ScanArgs& a = *static_cast<const ScanArgs*>(p);
  const int64_t L = a.length, Dm = a.dim, N = a.state;
  std::vector<float> h(N);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / Dm, d = r % Dm;
    for (int64_t n = 0; n < N; ++n) h[n] = a.h0 ? a.h0[(b * Dm + d) * N + n] : 0.f;
    const float* Ad = a.A + d * N;
    const float bias = a.dt_bias ? a.dt_bias[d] : 0.f;
    for (int64_t t = 0; t < L; ++t) {
      const int64_t i = (b * L + t) * Dm + d;
      const float xv = a.x[i] * a.x_scale;
      float dtv = a.dt[i] * a.dt_scale + bias;
      if (a.dt_softplus) dtv = softplus(dtv);
      const int8_t* Bt = a.B + (b * L + t) * N;
      const int8_t* Ct = a.C + (b * L + t) * N;
      const float dbx = dtv * xv * a.B_scale;
      float acc = 0.f;
      for (int64_t n = 0; n < N; ++n) {
        h[n] = std::exp(dtv * Ad[n]) * h[n] + dbx * Bt[n];
        acc += Ct[n] * h[n];
      }
      float yv = acc * a.C_scale + (a.D ? a.D[d] * xv : 0.f);
      if (a.z) yv *= silu(a.z[i] * a.z_scale);
      a.y[i] = yv;
    }
    if (a.h_out)
      for (int64_t n = 0; n < N; ++n) a.h_out[(b * Dm + d) * N + n] = h[n];
  }
}

void conv_rows(void* p, int64_t r0, int64_t r1) {
  const ConvArgs& a = *static_cast<const ConvArgs*>(p);
  const int64_t L = a.length, Dm = a.dim, K = a.kernel;
  std::vector<float> window(K + L);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / Dm, d = r % Dm;
    // window = [state (K-1 previous inputs), x_0 .. x_{L-1}] for this channel.
    for (int64_t j = 0; j < K - 1; ++j) window[j] = a.state_in ? a.state_in[(b * Dm + d) * (K - 1) + j] : 0.f;
    for (int64_t t = 0; t < L; ++t) window[K - 1 + t] = a.x[(b * L + t) * Dm + d] * a.x_scale;
    const float* w = a.weight + d * K;
    for (int64_t t = 0; t < L; ++t) {
      float acc = a.bias ? a.bias[d] : 0.f;
      for (int64_t j = 0; j < K; ++j) acc += w[j] * window[t + j];
      a.y[(b * L + t) * Dm + d] = a.silu ? silu(acc) : acc;
    }
    if (a.state_out)
      for (int64_t j = 0; j < K - 1; ++j) a.state_out[(b * Dm + d) * (K - 1) + j] = window[L + j];
  }
}

// The vectorised paths: the work split into tiles of kTile channels of one batch row.
struct SimdScan {
  const ScanArgs* a;
  Isa isa;
  std::vector<float> Bf, Cf;  // B and C dequantized once, shared by every tile
  int64_t scratch_floats() const { return detail::scan_scratch_floats(a->state); }
  void tile(int64_t b, int64_t d0, int64_t width, float* scratch) const {
    if (isa == Isa::Avx512Vnni) detail::scan_tile_avx512(*a, Bf.data(), Cf.data(), b, d0, width, scratch);
    else detail::scan_tile_avx2(*a, Bf.data(), Cf.data(), b, d0, width, scratch);
  }
};

struct SimdConv {
  const ConvArgs* a;
  Isa isa;
  int64_t scratch_floats() const { return detail::conv_scratch_floats(a->kernel); }
  void tile(int64_t b, int64_t d0, int64_t width, float* scratch) const {
    if (isa == Isa::Avx512Vnni) detail::conv_tile_avx512(*a, b, d0, width, scratch);
    else detail::conv_tile_avx2(*a, b, d0, width, scratch);
  }
};

int64_t tiles_of(int64_t dim) { return (dim + detail::kTile - 1) / detail::kTile; }

// parallel_for body over (batch row, tile) pairs r0 .. r1 - 1.
template <class Job>
void run_tiles(void* p, int64_t r0, int64_t r1) {
  const Job& job = *static_cast<const Job*>(p);
  const int64_t dim = job.a->dim, tiles = tiles_of(dim);
  std::vector<float> scratch(job.scratch_floats());
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t d0 = r % tiles * detail::kTile;
    job.tile(r / tiles, d0, std::min(detail::kTile, dim - d0), scratch.data());
  }
}

// AVX2 without FMA (none known, but the flags are separate) falls back to the reference loop. AVX-512 CPUs run the
// AVX-512 scan/conv tiles (first run and tested on a Zen 5 host in session 17; QUANTC_MAMBA_AVX512=0 keeps the AVX2 tiles).
Isa simd_isa(Isa isa) {
  static const bool fma = [] { __builtin_cpu_init(); return __builtin_cpu_supports("fma") != 0; }();
  if (isa == Isa::Avx512Vnni && !mamba_avx512_enabled()) isa = Isa::Avx2;
  return isa == Isa::Avx2 && !fma ? Isa::Reference : isa;
}

}  // namespace

void selective_scan_int8(const ScanArgs& args) { selective_scan_int8(args, best_isa()); }

void selective_scan_int8(const ScanArgs& args, Isa isa) {
  isa = simd_isa(isa);
  if (isa == Isa::Reference) {
    parallel_for(args.batch * args.dim, args.length * args.state * 8, scan_rows, const_cast<ScanArgs*>(&args));
    return;
  }
  SimdScan s{&args, isa, {}, {}};
  const int64_t n = args.batch * args.length * args.state;
  s.Bf.resize(n);
  s.Cf.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    s.Bf[i] = args.B[i] * args.B_scale;
    s.Cf[i] = args.C[i] * args.C_scale;
  }
  parallel_for(args.batch * tiles_of(args.dim), args.length * detail::kTile * args.state * 8, run_tiles<SimdScan>, &s);
}

void causal_conv1d_int8(const ConvArgs& args) { causal_conv1d_int8(args, best_isa()); }

void causal_conv1d_int8(const ConvArgs& args, Isa isa) {
  isa = simd_isa(isa);
  if (isa == Isa::Reference) {
    parallel_for(args.batch * args.dim, args.length * args.kernel, conv_rows, const_cast<ConvArgs*>(&args));
    return;
  }
  SimdConv s{&args, isa};
  parallel_for(args.batch * tiles_of(args.dim), args.length * detail::kTile * args.kernel, run_tiles<SimdConv>, &s);
}

}  // namespace quantc
