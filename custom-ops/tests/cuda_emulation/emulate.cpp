// Runs the CUDA kernels of custom-ops/cuda/mamba.cu, hadamard.cu and swiglu.cu on CPU threads (cuda_runtime.h here stands
// in for CUDA) against the CPU kernels: the scan (int8 and float, 8 and 4 lanes, ragged shapes), the conv, Hadamard,
// HadamardQuantizeInt8 and SwiGluMatMulInt4Int8's SwiGLU. Exit 1 on any mismatch. No GPU or nvcc needed (any CMake
// configuration, QUANTC_CUDA=OFF too):
//   cmake --build BUILD --target quantc_cuda_emulation && BUILD/quantc_cuda_emulation
#include "cuda_runtime.h"  // first: the stand-in

#include <cstdio>
#include <random>
#include <string>

#include "../../cuda/hadamard.cu"
#include "../../cuda/mamba.cu"
#include "../../cuda/swiglu.cu"
#include "quantc/hadamard.h"
#include "quantc/mamba.h"
#include "quantc/quantize.h"
#include "quantc/swiglu.h"

namespace {

std::mt19937 rng(7);
int failures = 0;

std::vector<int8_t> i8(size_t n) {
  std::uniform_int_distribution<int> d(-128, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}
std::vector<float> f32(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
double rel(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}
void report(const std::string& what, double r, double tol) {
  const bool ok = r <= tol;
  failures += !ok;
  std::printf("%-60s %.2e %s\n", what.c_str(), r, ok ? "ok" : "FAIL");
}
long long i8_off(const std::vector<int8_t>& a, const std::vector<int8_t>& b) {
  long long worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max<long long>(worst, std::abs(int(a[i]) - int(b[i])));
  return worst;
}

void scan_case(int64_t B, int64_t L, int64_t D, int64_t N, int lanes) {
  const size_t bld = size_t(B * L * D), bln = size_t(B * L * N), hs = size_t(B * D * N);
  auto x = i8(bld), dt = i8(bld), z = i8(bld), Bm = i8(bln), Cm = i8(bln);
  auto bias = f32(size_t(D), -5.5f, -3.5f), A = f32(size_t(D * N), 0.f, 2.f), Dv = f32(size_t(D), 0.5f, 1.5f), h0 = f32(hs, -1, 1);
  for (float& a : A) a = -std::exp(a);
  const float sc[6] = {0.02f, 1.2f / 127, 0.02f, 0.02f, 0.03f, 0.01f};
  std::vector<float> y_ref(bld), h_ref(hs);
  quantc::ScanArgs r;
  r.batch = B; r.length = L; r.dim = D; r.state = N; r.x = x.data(); r.x_scale = sc[0]; r.dt = dt.data(); r.dt_scale = sc[1];
  r.dt_bias = bias.data(); r.A = A.data(); r.B = Bm.data(); r.B_scale = sc[2]; r.C = Cm.data(); r.C_scale = sc[3]; r.D = Dv.data();
  r.z = z.data(); r.z_scale = sc[4]; r.h0 = h0.data(); r.y = y_ref.data(); r.h_out = h_ref.data();
  quantc::selective_scan_int8(r, quantc::Isa::Reference);
  std::vector<int8_t> q_ref(bld), q(bld, 0x55);
  quantc::quantize_int8(y_ref.data(), int64_t(bld), sc[5], q_ref.data(), quantc::Isa::Reference);

  std::vector<float> y(bld, NAN), h(hs, NAN);
  quantc::cuda::ScanArgsCuda a;
  a.batch = B; a.length = L; a.dim = D; a.state = N; a.x = x.data(); a.dt = dt.data(); a.dt_bias = bias.data(); a.A = A.data();
  a.B = Bm.data(); a.C = Cm.data(); a.D = Dv.data(); a.z = z.data(); a.h0 = h0.data(); a.y = y.data(); a.h_out = h.data(); a.y_q = q.data();
  a.s = {sc, sc + 1, sc + 2, sc + 3, sc + 4, sc + 5};
  a.lanes = lanes;
  quantc::cuda::selective_scan_int8(a, nullptr);
  char name[128];
  std::snprintf(name, sizeof name, "scan int8 B%lld L%lld D%lld N%lld lanes %d: y, h_out", (long long)B, (long long)L, (long long)D,
                (long long)N, lanes);
  report(name, std::max(rel(y, y_ref), rel(h, h_ref)), 1e-6);
  report(std::string(name) + " y_q max |diff|", double(i8_off(q, q_ref)), 1);

  // The float scan on the dequantized inputs.
  auto deq = [](const std::vector<int8_t>& v, float s) {
    std::vector<float> f(v.size());
    for (size_t i = 0; i < v.size(); ++i) f[i] = v[i] * s;
    return f;
  };
  auto xf = deq(x, sc[0]), dtf = deq(dt, sc[1]), Bf = deq(Bm, sc[2]), Cf = deq(Cm, sc[3]), zf = deq(z, sc[4]);
  std::vector<float> yf(bld, NAN), hf(hs, NAN);
  quantc::cuda::ScanArgsF32 f;
  f.batch = B; f.length = L; f.dim = D; f.state = N; f.x = xf.data(); f.dt = dtf.data(); f.dt_bias = bias.data(); f.A = A.data();
  f.B = Bf.data(); f.C = Cf.data(); f.D = Dv.data(); f.z = zf.data(); f.h0 = h0.data(); f.y = yf.data(); f.h_out = hf.data();
  f.lanes = lanes;
  quantc::cuda::selective_scan_f32(f, nullptr);
  std::snprintf(name, sizeof name, "scan f32 B%lld L%lld D%lld N%lld lanes %d: y, h_out", (long long)B, (long long)L, (long long)D,
                (long long)N, lanes);
  report(name, std::max(rel(yf, y_ref), rel(hf, h_ref)), 1e-6);
}

// No dt_bias, softplus, D, z, h0, h_out or y_q: the kernels' null paths.
void scan_minimal(int64_t B, int64_t L, int64_t D, int64_t N) {
  const size_t bld = size_t(B * L * D), bln = size_t(B * L * N);
  auto x = i8(bld), dt = i8(bld), Bm = i8(bln), Cm = i8(bln);
  auto A = f32(size_t(D * N), -3.f, -0.5f);
  for (auto& v : dt) v = static_cast<int8_t>(std::abs(int(v)) / 2);  // dt >= 0 without softplus
  const float sc[4] = {0.02f, 0.1f / 127, 0.02f, 0.02f};
  std::vector<float> y_ref(bld), y(bld, NAN);
  quantc::ScanArgs r;
  r.batch = B; r.length = L; r.dim = D; r.state = N; r.x = x.data(); r.x_scale = sc[0]; r.dt = dt.data(); r.dt_scale = sc[1];
  r.dt_softplus = false; r.A = A.data(); r.B = Bm.data(); r.B_scale = sc[2]; r.C = Cm.data(); r.C_scale = sc[3]; r.y = y_ref.data();
  quantc::selective_scan_int8(r, quantc::Isa::Reference);
  quantc::cuda::ScanArgsCuda a;
  a.batch = B; a.length = L; a.dim = D; a.state = N; a.dt_softplus = false; a.x = x.data(); a.dt = dt.data(); a.A = A.data();
  a.B = Bm.data(); a.C = Cm.data(); a.y = y.data();
  a.s.x_scale = sc; a.s.dt_scale = sc + 1; a.s.B_scale = sc + 2; a.s.C_scale = sc + 3;
  quantc::cuda::selective_scan_int8(a, nullptr);
  report("scan int8 without dt_bias, softplus, D, z, h0, h_out, y_q: y", rel(y, y_ref), 1e-6);
}

void conv_case(int64_t B, int64_t L, int64_t D, int64_t K, bool state) {
  const size_t bld = size_t(B * L * D), st = size_t(B * D * (K - 1));
  auto x = i8(bld);
  auto w = f32(size_t(D * K), -0.5f, 0.5f), bias = f32(size_t(D), -1, 1), s_in = f32(st, -2, 2);
  const float xs = 0.02f;
  std::vector<float> y_ref(bld), s_ref(st), y(bld, NAN), s_out(st, NAN);
  quantc::ConvArgs r;
  r.batch = B; r.length = L; r.dim = D; r.kernel = K; r.x = x.data(); r.x_scale = xs; r.weight = w.data(); r.bias = bias.data();
  r.state_in = state ? s_in.data() : nullptr; r.y = y_ref.data(); r.state_out = s_ref.data();
  quantc::causal_conv1d_int8(r, quantc::Isa::Reference);
  quantc::cuda::ConvArgsCuda a;
  a.batch = B; a.length = L; a.dim = D; a.kernel = K; a.x = x.data(); a.x_scale = &xs; a.weight = w.data(); a.bias = bias.data();
  a.state_in = state ? s_in.data() : nullptr; a.y = y.data(); a.state_out = s_out.data();
  quantc::cuda::causal_conv1d_int8(a, nullptr);
  char name[128];
  std::snprintf(name, sizeof name, "conv B%lld L%lld D%lld K%lld%s: y, state_out (bits)", (long long)B, (long long)L, (long long)D,
                (long long)K, state ? " state" : "");
  report(name, std::max(rel(y, y_ref), rel(s_out, s_ref)), 0);
}

void hadamard_case(int64_t rows, int64_t n) {
  auto x = f32(size_t(rows * n), -2, 2);
  std::vector<float> ref(x.size()), y = x;
  quantc::hadamard_transform(x.data(), ref.data(), rows, n, true);
  quantc::cuda::hadamard(y.data(), y.data(), rows, n, true, nullptr);  // in place
  long long diffs = 0;
  for (size_t i = 0; i < y.size(); ++i) diffs += std::memcmp(&y[i], &ref[i], 4) != 0;
  report("hadamard " + std::to_string(rows) + " x " + std::to_string(n) + " in place: bit diffs", double(diffs), 0);
  const float s = 3.f / 127;
  std::vector<int8_t> q(x.size(), 0x55), q_ref(x.size());
  quantc::hadamard_quantize_int8(x.data(), q_ref.data(), rows, n, s);
  quantc::cuda::hadamard_quantize_int8(x.data(), &s, q.data(), rows, n, nullptr);
  report("hadamard_quantize_int8 " + std::to_string(rows) + " x " + std::to_string(n) + ": max |diff|", double(i8_off(q, q_ref)), 0);
}

}  // namespace

// The SwiGLU of a [rows, 2F] product, both gate halves, against the CPU kernel's reference path (std::exp; the CUDA kernel's
// expf), relative norm.
void swiglu_case(int64_t rows, int64_t F, int gate) {
  auto x = f32(size_t(rows * 2 * F), -12.f, 12.f);
  std::vector<float> want(size_t(rows * F)), got(size_t(rows * F), NAN);
  quantc::swiglu(x.data(), rows, F, gate, want.data(), quantc::Isa::Reference);
  const int e = quantc::cuda::swiglu(x.data(), got.data(), rows, F, gate, nullptr);
  report("SwiGLU rows " + std::to_string(rows) + " F " + std::to_string(F) + " gate " + std::to_string(gate), e ? INFINITY : rel(got, want),
         1e-6);
}

int main() {
  for (int gate : {0, 1}) {
    swiglu_case(3, 344, gate);
    swiglu_case(2, 1, gate);
    swiglu_case(1, 700, gate);  // more than one block of 256 threads
  }
  conv_case(2, 37, 40, 4, true);
  conv_case(1, 2, 130, 4, true);   // L < K - 1: state_out takes from state_in
  conv_case(1, 0, 20, 4, true);    // L = 0: state_out = state_in
  conv_case(2, 20, 33, 3, false);
  scan_minimal(2, 35, 24, 16);
  for (int lanes : {8, 4}) {
    scan_case(2, 37, 40, 16, lanes);
    scan_case(1, 33, 20, 5, lanes);
    scan_case(1, 5, 8, 64, lanes);
    scan_case(1, 1, 24, 16, lanes);
  }
  const std::vector<std::pair<int64_t, int64_t>> had = {{1, 4096}, {2, 5120}, {1, 11008}, {3, 12}, {2, 24}, {2, 344}, {1, 2}, {2, 1}};
  for (auto [rows, n] : had) hadamard_case(rows, n);
  for (int m : quantc::hadamard_orders())  // every H_m, with 4 and 32 columns (the float4 mix)
    for (int p2 : {4, 32}) hadamard_case(1, int64_t(m) * p2);
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
