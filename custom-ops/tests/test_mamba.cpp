#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "quantc/gemm.h"
#include "quantc/mamba.h"

namespace {

struct Data {
  int64_t Bt = 2, L = 9, D = 5, N = 4;
  std::vector<int8_t> x, dt, B, C, z;
  std::vector<float> A, Dskip, dt_bias, h0;
  Data(unsigned seed, int64_t batch, int64_t length, int64_t dim, int64_t state) : Bt(batch), L(length), D(dim), N(state) { init(seed); }
  explicit Data(unsigned seed) { init(seed); }
  void init(unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> q(-127, 127);
    std::uniform_real_distribution<float> u(0.1f, 2.0f);
    auto fill = [&](std::vector<int8_t>& v, int64_t n) { v.resize(n); for (auto& e : v) e = static_cast<int8_t>(q(rng)); };
    fill(x, Bt * L * D); fill(dt, Bt * L * D); fill(B, Bt * L * N); fill(C, Bt * L * N); fill(z, Bt * L * D);
    A.resize(D * N); for (auto& e : A) e = -u(rng);
    Dskip.resize(D); for (auto& e : Dskip) e = u(rng);
    dt_bias.resize(D); for (auto& e : dt_bias) e = u(rng) - 1.5f;
    h0.resize(Bt * D * N); for (auto& e : h0) e = u(rng) - 1.f;
  }
  quantc::ScanArgs args(float* y, float* h_out, bool with_state) const {
    quantc::ScanArgs a;
    a.batch = Bt; a.length = L; a.dim = D; a.state = N;
    a.x = x.data(); a.x_scale = 0.02f; a.dt = dt.data(); a.dt_scale = 0.01f; a.dt_bias = dt_bias.data();
    a.A = A.data(); a.B = B.data(); a.B_scale = 0.03f; a.C = C.data(); a.C_scale = 0.025f;
    a.D = Dskip.data(); a.z = z.data(); a.z_scale = 0.05f; a.h0 = with_state ? h0.data() : nullptr; a.y = y; a.h_out = h_out;
    return a;
  }
};

// The recurrence written out in double precision. y_scale (if given) gets, per output, the magnitude
// of what its float computation sums, (sum_n |C_n h_n| + |D x|) * |silu(z)|: float rounding error scales with it.
void reference_scan(const quantc::ScanArgs& a, std::vector<double>& y, std::vector<double>& h_out, std::vector<double>* y_scale = nullptr) {
  y.assign(a.batch * a.length * a.dim, 0);
  if (y_scale) y_scale->assign(y.size(), 0);
  h_out.assign(a.batch * a.dim * a.state, 0);
  for (int64_t b = 0; b < a.batch; ++b)
    for (int64_t d = 0; d < a.dim; ++d) {
      std::vector<double> h(a.state);
      for (int64_t n = 0; n < a.state; ++n) h[n] = a.h0 ? a.h0[(b * a.dim + d) * a.state + n] : 0;
      for (int64_t t = 0; t < a.length; ++t) {
        int64_t i = (b * a.length + t) * a.dim + d;
        double xv = a.x[i] * static_cast<double>(a.x_scale);
        double dt = a.dt[i] * static_cast<double>(a.dt_scale) + (a.dt_bias ? a.dt_bias[d] : 0.0);
        if (a.dt_softplus) dt = std::log1p(std::exp(dt));
        double acc = 0, mag = 0;
        for (int64_t n = 0; n < a.state; ++n) {
          double bv = a.B[(b * a.length + t) * a.state + n] * static_cast<double>(a.B_scale);
          double cv = a.C[(b * a.length + t) * a.state + n] * static_cast<double>(a.C_scale);
          h[n] = std::exp(dt * a.A[d * a.state + n]) * h[n] + dt * bv * xv;
          acc += cv * h[n];
          mag += std::fabs(cv * h[n]);
        }
        double yv = acc + (a.D ? a.D[d] * xv : 0.0);
        mag += a.D ? std::fabs(a.D[d] * xv) : 0.0;
        if (a.z) {
          double zv = a.z[i] * static_cast<double>(a.z_scale);
          yv *= zv / (1 + std::exp(-zv));
          mag *= std::fabs(zv / (1 + std::exp(-zv)));
        }
        y[i] = yv;
        if (y_scale) (*y_scale)[i] = mag;
      }
      for (int64_t n = 0; n < a.state; ++n) h_out[(b * a.dim + d) * a.state + n] = h[n];
    }
}

// The largest |got - want| / (1 + |scale|) (scale = want unless given).
double max_rel_err(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>* scale = nullptr) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(got[i] - want[i]) / (1 + std::fabs(scale ? (*scale)[i] : want[i])));
  return worst;
}

// The vectorised paths this CPU has.
std::vector<quantc::Isa> simd_isas() {
  std::vector<quantc::Isa> r;
  if (quantc::best_isa() != quantc::Isa::Reference) r.push_back(quantc::Isa::Avx2);
  if (quantc::best_isa() == quantc::Isa::Avx512Vnni && quantc::mamba_avx512_enabled()) r.push_back(quantc::Isa::Avx512Vnni);
  return r;
}

TEST(QSelectiveScan, MatchesTheRecurrence) {
  Data data(5);
  for (bool with_state : {false, true}) {
    std::vector<float> y(data.Bt * data.L * data.D), h(data.Bt * data.D * data.N);
    auto args = data.args(y.data(), h.data(), with_state);
    quantc::selective_scan_int8(args);
    std::vector<double> ry, rh;
    reference_scan(args, ry, rh);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ry[i], 1e-5 * (1 + std::fabs(ry[i]))) << i;
    for (size_t i = 0; i < h.size(); ++i) ASSERT_NEAR(h[i], rh[i], 1e-5 * (1 + std::fabs(rh[i]))) << i;
  }
}

TEST(QSelectiveScan, StateCarriesAcrossCalls) {
  Data data(9);
  data.Bt = 1;
  std::vector<float> y(data.L * data.D), h(data.D * data.N);
  auto whole = data.args(y.data(), h.data(), false);
  whole.batch = 1;
  quantc::selective_scan_int8(whole);
  // First 4 steps, then the remaining 5 from the returned state.
  std::vector<float> y1(4 * data.D), h1(data.D * data.N), y2(5 * data.D), h2(data.D * data.N);
  auto first = whole;
  first.length = 4; first.y = y1.data(); first.h_out = h1.data();
  quantc::selective_scan_int8(first);
  auto second = whole;
  second.length = 5; second.h0 = h1.data(); second.y = y2.data(); second.h_out = h2.data();
  second.x += 4 * data.D; second.dt += 4 * data.D; second.z += 4 * data.D; second.B += 4 * data.N; second.C += 4 * data.N;
  quantc::selective_scan_int8(second);
  for (int64_t i = 0; i < 4 * data.D; ++i) ASSERT_FLOAT_EQ(y[i], y1[i]);
  for (int64_t i = 0; i < 5 * data.D; ++i) ASSERT_NEAR(y[4 * data.D + i], y2[i], 1e-6 * (1 + std::fabs(y2[i])));
  for (size_t i = 0; i < h.size(); ++i) ASSERT_NEAR(h[i], h2[i], 1e-6 * (1 + std::fabs(h2[i])));
}

// The vectorised paths against the double-precision recurrence and against the reference path, on
// sizes that are not multiples of the vector width (or of the 64-channel tile), with each optional
// input present and absent.
TEST(QSelectiveScan, VectorisedPathsMatchTheRecurrenceAndTheReferencePath) {
  struct Case { int64_t batch, length, dim, state; };
  const Case cases[] = {{2, 9, 5, 4}, {1, 17, 8, 16}, {2, 33, 13, 16}, {1, 40, 64, 16}, {2, 21, 100, 3}, {1, 70, 130, 17}, {3, 5, 67, 1}, {1, 1, 1024, 16}};
  if (simd_isas().empty()) GTEST_SKIP() << "no AVX2 on this CPU";
  double worst_y = 0, worst_h = 0, worst_vs_ref = 0;
  unsigned seed = 11;
  for (const Case& c : cases)
    for (int variant = 0; variant < 6; ++variant) {
      Data data(seed++, c.batch, c.length, c.dim, c.state);
      std::vector<float> y(c.batch * c.length * c.dim), h(c.batch * c.dim * c.state), ry(y.size()), rh(h.size());
      auto args = data.args(y.data(), h.data(), variant % 2 == 1);
      if (variant == 2) { args.D = nullptr; args.z = nullptr; }
      if (variant == 3) { args.dt_bias = nullptr; args.dt_softplus = false; args.dt_scale = 0.002f; }  // dt must stay positive-ish
      if (variant == 4) args.h_out = nullptr;
      if (variant == 5) { args.z = nullptr; args.dt_scale = 0.1f; }  // softplus over [-14, 12]: both of its branches
      if (variant == 3) for (int8_t& v : data.dt) v = static_cast<int8_t>(v < 0 ? -v : v);
      auto ref = args;
      ref.y = ry.data(); ref.h_out = args.h_out ? rh.data() : nullptr;
      quantc::selective_scan_int8(ref, quantc::Isa::Reference);
      std::vector<double> wy, wh, scale;
      reference_scan(args, wy, wh, &scale);
      for (quantc::Isa isa : simd_isas()) {
        std::fill(y.begin(), y.end(), -1.f);
        std::fill(h.begin(), h.end(), -1.f);
        quantc::selective_scan_int8(args, isa);
        // y relative to the magnitude of its terms (the plain float loop is off by up to ~3e-5
        // relative to |y| itself on these sizes, from cancellation in C . h); h relative to itself.
        const double ey = max_rel_err(y, wy, &scale), eh = args.h_out ? max_rel_err(h, wh) : 0.0;
        const double er = max_rel_err(y, std::vector<double>(ry.begin(), ry.end()), &scale);
        if (std::getenv("QUANTC_SCAN_ERRORS"))
          std::printf("%s %ldx%ldx%ldx%ld v%d: fast y %.3g h %.3g (vs |y|: %.3g), reference path y %.3g (vs |y|: %.3g), fast vs reference %.3g\n",
                      quantc::isa_name(isa), (long)c.batch, (long)c.length, (long)c.dim, (long)c.state, variant, ey, eh, max_rel_err(y, wy),
                      max_rel_err(ry, wy, &scale), max_rel_err(ry, wy), er);
        ASSERT_LE(ey, 1e-5) << quantc::isa_name(isa) << " case " << c.dim << "x" << c.state << " variant " << variant;
        ASSERT_LE(eh, 1e-5) << quantc::isa_name(isa) << " case " << c.dim << "x" << c.state << " variant " << variant;
        ASSERT_LE(er, 1e-5) << quantc::isa_name(isa) << " vs reference path, case " << c.dim << "x" << c.state << " variant " << variant;
        worst_y = std::max(worst_y, ey); worst_h = std::max(worst_h, eh); worst_vs_ref = std::max(worst_vs_ref, er);
      }
    }
  std::printf("max |err| / (1 + |terms|) vs double: y %.3g, h %.3g (/ (1 + |h|)); vs the reference path: %.3g\n", worst_y, worst_h, worst_vs_ref);
}

// The reference path itself, against the same recurrence (it is what the fast paths are checked against).
TEST(QSelectiveScan, ReferencePathMatchesTheRecurrence) {
  Data data(3, 2, 13, 7, 5);
  std::vector<float> y(2 * 13 * 7), h(2 * 7 * 5);
  auto args = data.args(y.data(), h.data(), true);
  quantc::selective_scan_int8(args, quantc::Isa::Reference);
  std::vector<double> wy, wh;
  reference_scan(args, wy, wh);
  ASSERT_LE(max_rel_err(y, wy), 1e-5);
  ASSERT_LE(max_rel_err(h, wh), 1e-5);
}

// Every path, on channel counts that are not multiples of the vector width or the tile, K from 1 to 5.
TEST(QCausalConv1d, MatchesDirectConvolutionAndCarriesState) {
  struct Case { int64_t Bt, L, D, K; bool silu, with_state; };
  const Case cases[] = {{2, 7, 3, 4, true, true}, {1, 20, 64, 4, true, false}, {2, 9, 77, 3, false, true}, {1, 5, 130, 1, true, true},
                        {3, 2, 17, 5, true, true}, {1, 1, 1024, 4, true, true}};
  std::vector<quantc::Isa> isas = simd_isas();
  isas.insert(isas.begin(), quantc::Isa::Reference);
  for (const Case& c : cases) {
    const int64_t Bt = c.Bt, L = c.L, D = c.D, K = c.K;
    std::mt19937 rng(static_cast<unsigned>(D * 7 + K));
    std::uniform_int_distribution<int> q(-127, 127);
    std::normal_distribution<float> g;
    std::vector<int8_t> x(Bt * L * D);
    for (auto& e : x) e = static_cast<int8_t>(q(rng));
    std::vector<float> w(D * K), bias(D), state(Bt * D * (K - 1)), y(Bt * L * D), state_out(Bt * D * (K - 1));
    for (auto& e : w) e = g(rng);
    for (auto& e : bias) e = g(rng);
    for (auto& e : state) e = g(rng);
    quantc::ConvArgs a;
    a.batch = Bt; a.length = L; a.dim = D; a.kernel = K; a.x = x.data(); a.x_scale = 0.05f; a.weight = w.data(); a.bias = bias.data();
    a.state_in = c.with_state ? state.data() : nullptr; a.y = y.data(); a.state_out = state_out.data(); a.silu = c.silu;
    for (quantc::Isa isa : isas) {
      std::fill(y.begin(), y.end(), -7.f);
      quantc::causal_conv1d_int8(a, isa);
      for (int64_t b = 0; b < Bt; ++b)
        for (int64_t d = 0; d < D; ++d) {
          auto input = [&](int64_t t) -> double {  // t may be negative: the state holds t = -(K-1) .. -1
            if (t >= 0) return x[(b * L + t) * D + d] * 0.05;
            return c.with_state ? state[(b * D + d) * (K - 1) + (K - 1 + t)] : 0.0;
          };
          for (int64_t t = 0; t < L; ++t) {
            double acc = bias[d];
            for (int64_t j = 0; j < K; ++j) acc += w[d * K + j] * input(t - (K - 1) + j);
            double want = c.silu ? acc / (1 + std::exp(-acc)) : acc;
            ASSERT_NEAR(y[(b * L + t) * D + d], want, 1e-5 * (1 + std::fabs(want))) << quantc::isa_name(isa) << " D " << D << " K " << K;
          }
          for (int64_t j = 0; j < K - 1; ++j)
            ASSERT_FLOAT_EQ(state_out[(b * D + d) * (K - 1) + j], static_cast<float>(input(L - (K - 1) + j))) << quantc::isa_name(isa);
        }
    }
  }
}

}  // namespace
