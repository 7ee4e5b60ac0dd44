// Times the kernels behind the small mamba's quamba prefill, each path of each: QSelectiveScan
// (L 128, d_inner 1024, d_state 16, with D, z, dt_bias, h0), QCausalConv1d (d_inner 1024, K 4) and
// the int8 GEMMs of in_proj (M 128, N 2048, K 512) and out_proj (M 128, N 512, K 1024): unpacked
// dot products vs the packed AVX2 GEMM. Runs each path `reps` times, interleaved, and prints the
// minimum and median ms. Not a test. Usage: quantc_mamba_kernels [reps]
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "quantc/gemm.h"
#include "quantc/mamba.h"

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Runs the named cases round-robin `reps` times (after one warm-up each) and prints min and median.
void compare(const char* title, const std::vector<std::pair<std::string, std::function<void()>>>& cases, int reps) {
  std::vector<std::vector<double>> t(cases.size());
  for (auto& c : cases) c.second();
  for (int r = 0; r < reps; ++r)
    for (size_t i = 0; i < cases.size(); ++i) {
      auto t0 = std::chrono::steady_clock::now();
      cases[i].second();
      t[i].push_back(ms_since(t0));
    }
  std::printf("%s\n", title);
  for (size_t i = 0; i < cases.size(); ++i) {
    std::sort(t[i].begin(), t[i].end());
    std::printf("  %-28s min %8.3f ms  median %8.3f ms\n", cases[i].first.c_str(), t[i].front(), t[i][t[i].size() / 2]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 15;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> q(-127, 127);
  auto i8 = [&](size_t n) { std::vector<int8_t> v(n); for (auto& e : v) e = static_cast<int8_t>(q(rng)); return v; };
  const quantc::Isa best = quantc::best_isa();
  std::printf("best path: %s\n", quantc::isa_name(best));

  const int64_t L = 128, D = 1024, N = 16;
  auto x = i8(L * D), dt = i8(L * D), z = i8(L * D), B = i8(L * N), C = i8(L * N);
  std::vector<float> A(D * N), Dv(D, 1.f), bias(D), h0(D * N, 0.f), y(L * D), h(D * N);
  for (int64_t i = 0; i < D * N; ++i) A[i] = -1.f - static_cast<float>(i % N);
  for (int64_t d = 0; d < D; ++d) bias[d] = -6.f + 4.f * static_cast<float>(d) / D;
  quantc::ScanArgs s;
  s.batch = 1; s.length = L; s.dim = D; s.state = N;
  s.x = x.data(); s.x_scale = .02f; s.dt = dt.data(); s.dt_scale = .01f; s.dt_bias = bias.data(); s.A = A.data();
  s.B = B.data(); s.B_scale = .02f; s.C = C.data(); s.C_scale = .02f; s.D = Dv.data(); s.z = z.data(); s.z_scale = .02f;
  s.h0 = h0.data(); s.y = y.data(); s.h_out = h.data();
  compare("QSelectiveScan L 128, d_inner 1024, d_state 16", {{"reference", [&] { quantc::selective_scan_int8(s, quantc::Isa::Reference); }},
                                                            {isa_name(best), [&] { quantc::selective_scan_int8(s, best); }}}, reps);

  std::vector<float> w(D * 4, .1f), cb(D, .1f), cy(L * D);
  quantc::ConvArgs c;
  c.batch = 1; c.length = L; c.dim = D; c.kernel = 4; c.x = x.data(); c.x_scale = .02f; c.weight = w.data(); c.bias = cb.data(); c.y = cy.data();
  compare("QCausalConv1d L 128, d_inner 1024, K 4", {{"reference", [&] { quantc::causal_conv1d_int8(c, quantc::Isa::Reference); }},
                                                    {isa_name(best), [&] { quantc::causal_conv1d_int8(c, best); }}}, reps);

  for (auto [M, Nn, K] : {std::array<int64_t, 3>{128, 2048, 512}, std::array<int64_t, 3>{128, 512, 1024}}) {
    auto a = i8(M * K), b = i8(Nn * K);
    std::vector<float> bs(Nn, .01f), out(M * Nn);
    auto packed = quantc::pack_b_avx2(b.data(), Nn, K);
    std::vector<std::pair<std::string, std::function<void()>>> cases = {
        {"avx2 dot products", [&] { quantc::matmul_int8(a.data(), b.data(), M, Nn, K, .01f, bs.data(), nullptr, out.data(), quantc::Isa::Avx2); }},
        {"avx2 packed", [&] { quantc::matmul_int8_avx2_packed(a.data(), packed, M, .01f, bs.data(), nullptr, out.data()); }}};
    if (best == quantc::Isa::Reference) cases.clear();
    const std::string title = "MatMulInt8 M " + std::to_string(M) + ", N " + std::to_string(Nn) + ", K " + std::to_string(K);
    compare(title.c_str(), cases, reps);
  }
}
