#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "quantc/mamba.h"

namespace {

struct Data {
  int64_t Bt = 2, L = 9, D = 5, N = 4;
  std::vector<int8_t> x, dt, B, C, z;
  std::vector<float> A, Dskip, dt_bias, h0;
  explicit Data(unsigned seed) {
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

// The recurrence written out in double precision.
void reference_scan(const quantc::ScanArgs& a, std::vector<double>& y, std::vector<double>& h_out) {
  y.assign(a.batch * a.length * a.dim, 0);
  h_out.assign(a.batch * a.dim * a.state, 0);
  for (int64_t b = 0; b < a.batch; ++b)
    for (int64_t d = 0; d < a.dim; ++d) {
      std::vector<double> h(a.state);
      for (int64_t n = 0; n < a.state; ++n) h[n] = a.h0 ? a.h0[(b * a.dim + d) * a.state + n] : 0;
      for (int64_t t = 0; t < a.length; ++t) {
        int64_t i = (b * a.length + t) * a.dim + d;
        double xv = a.x[i] * static_cast<double>(a.x_scale);
        double dt = a.dt[i] * static_cast<double>(a.dt_scale) + a.dt_bias[d];
        dt = std::log1p(std::exp(dt));
        double acc = 0;
        for (int64_t n = 0; n < a.state; ++n) {
          double bv = a.B[(b * a.length + t) * a.state + n] * static_cast<double>(a.B_scale);
          double cv = a.C[(b * a.length + t) * a.state + n] * static_cast<double>(a.C_scale);
          h[n] = std::exp(dt * a.A[d * a.state + n]) * h[n] + dt * bv * xv;
          acc += cv * h[n];
        }
        double yv = acc + a.D[d] * xv;
        double zv = a.z[i] * static_cast<double>(a.z_scale);
        y[i] = yv * zv / (1 + std::exp(-zv));
      }
      for (int64_t n = 0; n < a.state; ++n) h_out[(b * a.dim + d) * a.state + n] = h[n];
    }
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

TEST(QCausalConv1d, MatchesDirectConvolutionAndCarriesState) {
  const int64_t Bt = 2, L = 7, D = 3, K = 4;
  std::mt19937 rng(2);
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
  a.state_in = state.data(); a.y = y.data(); a.state_out = state_out.data();
  quantc::causal_conv1d_int8(a);
  for (int64_t b = 0; b < Bt; ++b)
    for (int64_t d = 0; d < D; ++d) {
      auto input = [&](int64_t t) -> double {  // t may be negative: the state holds t = -(K-1) .. -1
        return t < 0 ? state[(b * D + d) * (K - 1) + (K - 1 + t)] : x[(b * L + t) * D + d] * 0.05;
      };
      for (int64_t t = 0; t < L; ++t) {
        double acc = bias[d];
        for (int64_t j = 0; j < K; ++j) acc += w[d * K + j] * input(t - (K - 1) + j);
        double want = acc / (1 + std::exp(-acc));
        ASSERT_NEAR(y[(b * L + t) * D + d], want, 1e-5 * (1 + std::fabs(want)));
      }
      for (int64_t j = 0; j < K - 1; ++j) ASSERT_FLOAT_EQ(state_out[(b * D + d) * (K - 1) + j], static_cast<float>(input(L - (K - 1) + j)));
    }
}

}  // namespace
