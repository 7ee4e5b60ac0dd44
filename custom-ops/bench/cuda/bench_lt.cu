// The cuBLASLt paths of quantc_cuda_bench (cuda/lt.cu): MatMulInt8 as cuBLASLt int8 + quantc's epilogue (bit-exact against the
// CPU kernel) and MatMulInt4Fp8 as the weight packed once to float8 + cuBLASLt's FP8 GEMM + the per-token epilogue (relative
// norm against the CPU kernel's exact sum). Large M: the CPU reference on rows 0-63 and the last 64 (the GEMMs are row-independent).
#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <vector>

#include "quantc/cuda_lt.h"
#include "quantc/gemm.h"
#include "quantc/gemm_fp8.h"
#include "suites.h"

namespace qcb {
namespace {

struct Shape {
  int64_t M, N, K;
};

std::string shape_name(const Shape& s) {
  return "M=" + std::to_string(s.M) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K);
}

// The rows the CPU reference computes: all when M <= 128, else 0-63 and M-64..M-1.
std::vector<int64_t> checked_rows(int64_t M) {
  std::vector<int64_t> r;
  for (int64_t m = 0; m < M; ++m)
    if (M <= 128 || m < 64 || m >= M - 64) r.push_back(m);
  return r;
}

std::string rows_note(int64_t M) { return M <= 128 ? "" : " (rows 0-63, " + std::to_string(M - 64) + "-" + std::to_string(M - 1) + ")"; }

template <typename T>
std::vector<T> take_rows(const std::vector<T>& v, const std::vector<int64_t>& rows, int64_t width) {
  std::vector<T> out;
  out.reserve(rows.size() * width);
  for (int64_t m : rows) out.insert(out.end(), v.begin() + m * width, v.begin() + (m + 1) * width);
  return out;
}

void push(Row r) {
  std::printf("  %-34s %-26s %-34s %9.4f ms %9.1f %s %5.0f%% %s\n", r.kernel.c_str(), r.shape.c_str(), r.check.c_str(), r.ms, r.rate,
              r.unit.c_str(), 100 * r.peak_frac, r.peer.empty() ? "" : (std::to_string(r.vs).substr(0, 4) + "x " + r.peer).c_str());
  std::fflush(stdout);
  rows().push_back(std::move(r));
}

// The checked run's outcome: false (and the row pushed as not applicable) where cuBLASLt has no algorithm; else synchronized.
bool ran(Row& r, int rc, const char* what) {
  if (rc == cudaErrorNotSupported) {
    r.check = std::string("n/a: cuBLASLt has no ") + what + " algorithm here";
    push(r);
    return false;
  }
  QC_LAUNCH(rc);
  QC_CHECK(cudaDeviceSynchronize());
  return true;
}

// The row's rate: GB/s of `bytes` against the copy ceiling for decode shapes, else 2 M N K per second against `peak`.
void set_rate(Row& r, const Shape& s, double bytes, double peak, const char* unit) {
  if (s.M <= 8) {
    r.rate = bytes / (r.ms * 1e-3) / 1e9;
    r.unit = "GB/s (copy peak)";
  } else {
    r.rate = 2.0 * s.M * s.N * s.K / (r.ms * 1e-3) / 1e12;
    r.unit = unit;
  }
  r.peak_frac = r.rate / peak;
  r.vs = cublas_fp16_ms(s.M, s.N, s.K) / r.ms;
  r.peer = "cuBLAS fp16";
}

void int8_case(const Shape& s, const Peaks& peaks) {
  Row r;
  r.kernel = "MatMulInt8 cuBLASLt+epilogue";
  r.shape = shape_name(s);
  const auto a = rand_i8(size_t(s.M * s.K)), b = rand_i8(size_t(s.N * s.K));
  const auto sb = rand_f32(size_t(s.N), 0.001f, 0.02f), bias = rand_f32(size_t(s.N), -1.f, 1.f);
  const std::vector<float> sa{0.0173f};
  Dev<int8_t> da(a), db(b);
  Dev<float> dsa(sa), dsb(sb), dbias(bias), dy(size_t(s.M * s.N));
  dy.poison();
  if (!ran(r, quantc::cuda::matmul_int8_lt(da.p, dsa.p, db.p, dsb.p, dbias.p, dy.p, s.M, s.N, s.K, nullptr), "int8")) return;
  const auto rows_ = checked_rows(s.M);
  const auto got = take_rows(dy.download(), rows_, s.N);
  const auto ar = take_rows(a, rows_, s.K);
  std::vector<float> ref(rows_.size() * s.N);
  quantc::matmul_int8(ar.data(), b.data(), int64_t(rows_.size()), s.N, s.K, sa[0], sb.data(), bias.data(), ref.data(),
                      quantc::Isa::Reference);
  const long long diffs = bit_diffs(got, ref);
  r.ok = diffs == 0;
  r.check = (r.ok ? std::string("exact") : "FAIL " + std::to_string(diffs) + " elements differ") + rows_note(s.M);
  // Timing: rotating A and B sets (B is the large operand).
  const int sets = sets_for(size_t(s.N * s.K + s.M * s.K));
  std::vector<Dev<int8_t>> as, bs;
  for (int i = 0; i < sets; ++i) {
    as.emplace_back(rand_i8(size_t(s.M * s.K)));
    bs.emplace_back(rand_i8(size_t(s.N * s.K)));
  }
  r.ms = time_ms([&](int i) { QC_LAUNCH(quantc::cuda::matmul_int8_lt(as[i].p, dsa.p, bs[i].p, dsb.p, dbias.p, dy.p, s.M, s.N, s.K, nullptr)); },
                 sets, quick() ? 3 : 10, quick() ? 10 : 50);
  set_rate(r, s, double(s.N * s.K + s.M * s.K + 4 * s.M * s.N), s.M <= 8 ? peaks.copy_gbs : peaks.int8_tops, "TOPS (int8 peak)");
  push(r);
}

// Random fp8 e4m3fn scale bytes: positive, finite, exponent field 4..9 (about 2^-3 .. 2^2).
std::vector<uint8_t> fp8_scales(size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>((rng().uniform_int(4, 9) << 3) | rng().uniform_int(0, 7));
  return v;
}

void fp8_case(const Shape& s, int64_t G, const Peaks& peaks) {
  Row r;
  r.kernel = "MatMulInt4Fp8 pack+cuBLASLt fp8";
  r.shape = shape_name(s) + " G=" + std::to_string(G);
  if (!quantc::cuda::lt_fp8_available()) {
    r.check = "n/a: no cuBLASLt or no FP8 tensor cores (sm < 89)";
    push(r);
    return;
  }
  const int64_t rb = (s.K + 1) / 2;
  auto x = rand_f32(size_t(s.M * s.K), -1.f, 1.f);
  for (size_t i = 0; i < x.size(); i += 997) x[i] *= 40.f;  // a few outliers per row
  const auto w = rand_u8(size_t(s.N * rb)), ws = fp8_scales(size_t(s.N * (s.K / G)));
  Dev<float> dx(x), dy(size_t(s.M * s.N));
  Dev<uint8_t> dw(w), dws(ws), db(size_t(s.N * s.K)), scratch(quantc::cuda::matmul_fp8_lt_scratch_bytes(s.M, s.K));
  QC_LAUNCH(quantc::cuda::int4_fp8_pack(dw.p, dws.p, db.p, s.N, s.K, G, nullptr));
  dy.poison();
  const int t_exp = 2;
  if (!ran(r, quantc::cuda::matmul_fp8_lt(dx.p, db.p, dy.p, s.M, s.N, s.K, t_exp, scratch.p, nullptr), "FP8")) return;
  const auto rows_ = checked_rows(s.M);
  const auto got = take_rows(dy.download(), rows_, s.N);
  const auto xr = take_rows(x, rows_, s.K);
  std::vector<float> ref(rows_.size() * s.N);
  quantc::matmul_int4_fp8(xr.data(), w.data(), ws.data(), int64_t(rows_.size()), s.N, s.K, G, t_exp, ref.data());
  const double err = rel_err(got, ref);
  r.ok = err < 1e-5;
  char buf[96];
  std::snprintf(buf, sizeof buf, "%srel %.2e", r.ok ? "" : "FAIL ", err);
  r.check = buf + rows_note(s.M);
  // The pack (once per constant weight) timed alone, then the per-call work on rotating sets of packed weights.
  const double pack_ms = time_ms([&](int) { QC_LAUNCH(quantc::cuda::int4_fp8_pack(dw.p, dws.p, db.p, s.N, s.K, G, nullptr)); }, 1, 2,
                                 quick() ? 5 : 10);
  const int sets = sets_for(size_t(s.N * s.K + 4 * s.M * s.K));
  std::vector<Dev<uint8_t>> bs;
  std::vector<Dev<float>> xs;
  for (int i = 0; i < sets; ++i) {
    bs.emplace_back(size_t(s.N * s.K));
    QC_LAUNCH(quantc::cuda::int4_fp8_pack(dw.p, dws.p, bs.back().p, s.N, s.K, G, nullptr));
    xs.emplace_back(x);
  }
  r.ms = time_ms([&](int i) { QC_LAUNCH(quantc::cuda::matmul_fp8_lt(xs[i].p, bs[i].p, dy.p, s.M, s.N, s.K, t_exp, scratch.p, nullptr)); },
                 sets, quick() ? 3 : 10, quick() ? 10 : 50);
  set_rate(r, s, double(s.N * s.K + 4 * s.M * s.K + 4 * s.M * s.N), s.M <= 8 ? peaks.copy_gbs : peaks.fp16_tflops, "TFLOP/s (fp16 peak)");
  char note[64];
  std::snprintf(note, sizeof note, "; pack once %.3f ms", pack_ms);
  r.check += note;
  push(r);
}

}  // namespace

void lt_suite(const Peaks& peaks) {
  std::printf("\ncuBLASLt suite (each row printed when measured):\n");
  std::vector<Shape> shapes;
  if (quick()) {
    shapes = {{1, 256, 512}, {64, 256, 512}, {200, 384, 1024}};
  } else {
    const int64_t nk[3][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}}, ms[4] = {1, 8, 512, 2048};
    for (const auto& d : nk)
      for (int64_t M : ms) shapes.push_back(Shape{M, d[0], d[1]});
  }
  for (const Shape& s : shapes) int8_case(s, peaks);
  for (const Shape& s : shapes) fp8_case(s, s.K % 128 == 0 ? 128 : 64, peaks);
}

}  // namespace qcb
