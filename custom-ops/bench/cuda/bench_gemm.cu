// The GEMM suite of quantc_cuda_bench: MatMulInt8, MatMulInt4Int8 (int8 and float A) and MatMulInt4Fp8, each code path
// (simple, GEMV, tile) checked against the CPU kernel on its own and timed against cuBLAS fp16 (and cuBLASLt int8) on the same shape.
// Order: edge shapes first (odd N, K tails, partial tiles), then LLaMA-7B-like layers; within each, the plain paths before the
// fast ones, so a failing kernel leaves the rows measured before it. A kernel that kills the CUDA context (a sticky error) ends
// the suite: its remaining rows say FAIL, the device is reset for the suites after it. Each row is printed as soon as measured.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "quantc/cuda_gemm_paths.h"
#include "quantc/cuda_ops.h"
#include "quantc/gemm.h"
#include "quantc/gemm_fp8.h"
#include "quantc/quantize.h"
#include "suites.h"

namespace qcb {
namespace {

using quantc::cuda::GemmPath;

// ---- inputs: a fast deterministic generator (splitmix64), 8 random bytes per step.
struct Gen {
  uint64_t s;
  explicit Gen(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
};

template <typename T>
std::vector<T> random_bytes(size_t n, uint64_t seed) {
  static_assert(sizeof(T) == 1, "bytes");
  std::vector<T> v(n);
  Gen g(seed);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t r = g.next();
    std::memcpy(&v[i], &r, 8);
  }
  for (; i < n; ++i) v[i] = static_cast<T>(g.next());
  return v;
}

std::vector<float> random_floats(size_t n, float lo, float hi, uint64_t seed) {
  std::vector<float> v(n);
  Gen g(seed);
  for (auto& x : v) x = lo + (hi - lo) * g.uniform();
  return v;
}

// Activations ~ U(-1, 1) with a few outliers (one element in 97 times 20), as real LLM activations.
std::vector<float> activations(size_t n, uint64_t seed) {
  std::vector<float> v = random_floats(n, -1.f, 1.f, seed);
  for (size_t i = 13; i < n; i += 97) v[i] *= 20.f;
  return v;
}

// float8 e4m3fn scale bytes: positive, exponent field 4..9 (0.125 .. 7.5), any mantissa.
std::vector<uint8_t> fp8_scales(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  Gen g(seed);
  for (auto& b : v) {
    const uint64_t r = g.next();
    b = static_cast<uint8_t>(((4 + r % 6) << 3) | ((r >> 8) & 7));
  }
  return v;
}

// ---- rotating device copies of one input (set 0 uploaded, the others copied from it on the device).
template <typename T>
struct Sets {
  std::vector<Dev<T>> d;
  Sets(const std::vector<T>& h, int n) {
    d.emplace_back(h);
    for (int s = 1; s < n; ++s) {
      d.emplace_back(h.size());
      QC_CHECK(cudaMemcpy(d.back().p, d[0].p, h.size() * sizeof(T), cudaMemcpyDeviceToDevice));
    }
  }
  Sets(size_t count, int n) {
    for (int s = 0; s < n; ++s) d.emplace_back(count);
  }
  T* operator[](int s) const { return d[size_t(s) % d.size()].p; }
};

// Rotating input sets: enough to keep the weights out of the L2 (sets_for); 2 in a quick run (it may run under compute-sanitizer).
int set_count(size_t bytes_per_set) { return quick() ? 2 : sets_for(bytes_per_set); }

// ---- the suite's state: a dead CUDA context stops it.
bool g_dead = false;
std::string g_dead_reason;

// "" when the launch returned 0 and the device finished without error; else the failure (a sticky one marks the context dead).
std::string cuda_failure(int launch_rc) {
  std::string what;
  if (launch_rc != 0) {
    what = std::string("launch: ") + cudaGetErrorString(static_cast<cudaError_t>(launch_rc));
    cudaGetLastError();
  }
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    g_dead = true;
    g_dead_reason = cudaGetErrorString(e);
    what += (what.empty() ? "" : "; ") + std::string("run: ") + g_dead_reason;
  }
  return what;
}

// The rows the CPU reference computes: all of them up to 128, else the first 64 and the last 64 (the kernels are row-independent).
std::vector<int64_t> check_rows(int64_t M) {
  std::vector<int64_t> r;
  if (M <= 128) {
    for (int64_t m = 0; m < M; ++m) r.push_back(m);
  } else {
    for (int64_t m = 0; m < 64; ++m) r.push_back(m);
    for (int64_t m = M - 64; m < M; ++m) r.push_back(m);
  }
  return r;
}

std::string rows_note(int64_t M) {
  if (M <= 128) return "";
  return " (rows 0-63, " + std::to_string(M - 64) + "-" + std::to_string(M - 1) + ")";
}

template <typename T>
std::vector<T> take_rows(const std::vector<T>& x, int64_t K, const std::vector<int64_t>& rows) {
  std::vector<T> out(rows.size() * size_t(K));
  for (size_t i = 0; i < rows.size(); ++i) std::copy_n(x.begin() + rows[i] * K, K, out.begin() + i * K);
  return out;
}

std::string shape_str(int64_t M, int64_t N, int64_t K, const std::string& extra = "") {
  return "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + extra;
}

void print_row(const Row& r) {
  std::printf("  %-26s %-34s %-40s %9.4f ms %8.1f %-18s %4.0f%%", r.kernel.c_str(), r.shape.c_str(), r.check.c_str(), r.ms, r.rate,
              r.unit.c_str(), 100 * r.peak_frac);
  if (!r.peer.empty()) std::printf("  %.2fx %s", r.vs, r.peer.c_str());
  std::printf("\n");
  std::fflush(stdout);
}

void push(Row r) {
  print_row(r);
  rows().push_back(std::move(r));
}

// What one checked and timed kernel call needs: its launch on input set s (returns the launch's int), the rotating set count,
// its output on the device (set 0), the CPU reference of check_rows(M) (may throw), the comparison, the rate's bytes or ops.
struct Case {
  std::string kernel, shape;
  int64_t M = 0, N = 0, K = 0;
  std::function<int(int)> launch;
  int sets = 1;
  float* y0 = nullptr;  // set 0's output [M, N]
  std::function<std::vector<float>()> reference;
  bool exact = true;  // bit for bit, else rel_err < tol
  double tol = 1e-5;
  bool decode = false;       // rate in GB/s of `bytes` (else TOPS / TFLOP/s of 2 M N K)
  double bytes = 0;
  bool fp16_peak = false;    // the ops rate against the fp16 tensor-core peak (else int8)
  bool slow = false;         // the simple paths: few repetitions
};

// The reference outputs, memoized per (op, shape): the paths of one op compare against the same rows.
// (A vector of pairs: std::map does not compile under nvcc 11.8 with clang as its host compiler.)
std::vector<std::pair<std::string, std::vector<float>>>& ref_memo() {
  static std::vector<std::pair<std::string, std::vector<float>>> m;
  return m;
}

const std::vector<float>& memo_ref(const std::string& key, const std::function<std::vector<float>()>& make) {
  for (auto& e : ref_memo())
    if (e.first == key) return e.second;
  ref_memo().emplace_back(key, make());
  return ref_memo().back().second;
}

Row run_case(const Case& c, const Peaks& peaks, const std::string& ref_key) {
  Row r;
  r.kernel = c.kernel;
  r.shape = c.shape;
  if (c.decode) {
    r.unit = "GB/s (copy peak)";
  } else {
    r.unit = c.fp16_peak ? "TFLOP/s (fp16 peak)" : "TOPS (int8 peak)";
  }
  if (g_dead) {
    r.ok = false;
    r.check = "FAIL skipped: CUDA context lost (" + g_dead_reason + ")";
    return r;
  }
  // Checked run on poisoned output.
  QC_CHECK(cudaMemset(c.y0, 0xFF, size_t(c.M * c.N) * sizeof(float)));
  int rc = 0;
  try {
    rc = c.launch(0);
  } catch (const std::exception& e) {
    r.ok = false;
    r.check = std::string("FAIL threw: ") + e.what();
    return r;
  }
  const std::string fail = cuda_failure(rc);
  if (!fail.empty()) {
    r.ok = false;
    r.check = "FAIL " + fail;
    return r;
  }
  std::vector<float> got(size_t(c.M * c.N));
  QC_CHECK(cudaMemcpy(got.data(), c.y0, got.size() * sizeof(float), cudaMemcpyDeviceToHost));
  long long nans = 0;
  for (float v : got) nans += std::isnan(v);
  std::vector<float> ref;
  try {
    ref = memo_ref(ref_key, [&] { return c.reference(); });
  } catch (const std::exception& e) {
    r.ok = false;
    r.check = std::string("FAIL CPU reference threw: ") + e.what();
  }
  if (r.check.empty()) {
    const std::vector<float> sub = take_rows(got, c.N, check_rows(c.M));
    char buf[160];
    if (nans) {
      r.ok = false;
      std::snprintf(buf, sizeof buf, "FAIL %lld NaN/poison outputs", nans);
    } else if (c.exact) {
      const long long d = bit_diffs(sub, ref);
      r.ok = d == 0;
      if (r.ok) std::snprintf(buf, sizeof buf, "exact");
      else std::snprintf(buf, sizeof buf, "FAIL %lld of %zu differ (rel %.2e)", d, ref.size(), rel_err(sub, ref));
    } else {
      const double e = rel_err(sub, ref);
      r.ok = e < c.tol;
      std::snprintf(buf, sizeof buf, "%srel %.2e", r.ok ? "" : "FAIL ", e);
    }
    r.check = buf + rows_note(c.M);
  }
  // Timing (also after a failed comparison: the figure still says what the kernel costs).
  bool bad = false;
  const int warm = c.slow || quick() ? 2 : 5, reps = c.slow ? 3 : quick() ? 5 : 20;
  r.ms = time_ms([&](int s) { bad |= c.launch(s) != 0; }, c.sets, warm, reps);
  if (bad) {
    r.ok = false;
    r.check += " (FAIL: a timed launch failed)";
  }
  if (c.decode) {
    r.rate = c.bytes / (r.ms * 1e-3) / 1e9;
    r.peak_frac = peaks.copy_gbs > 0 ? r.rate / peaks.copy_gbs : 0;
  } else {
    r.rate = 2.0 * c.M * c.N * c.K / (r.ms * 1e-3) / 1e12;
    const double peak = c.fp16_peak ? peaks.fp16_tflops : peaks.int8_tops;
    r.peak_frac = peak > 0 ? r.rate / peak : 0;
  }
  if (!c.slow) {
    r.vs = cublas_fp16_ms(c.M, c.N, c.K) / r.ms;
    r.peer = "cuBLAS fp16";
  }
  return r;
}

// After a lost context: the rows the op would have measured, as failures (no CUDA call: allocations would exit).
bool skipped(const std::string& op, const std::string& shape, const std::vector<GemmPath>& paths) {
  if (!g_dead) return false;
  for (GemmPath p : paths) {
    Row r;
    r.kernel = op + quantc::cuda::gemm_path_name(p);
    r.shape = shape;
    r.ok = false;
    r.check = "FAIL skipped: CUDA context lost (" + g_dead_reason + ")";
    push(r);
  }
  return true;
}

// ---- the ops. Each builds its inputs for one shape and runs the given paths.
struct Shape {
  int64_t M, N, K, G;
};

const char* path_label(GemmPath p) { return quantc::cuda::gemm_path_name(p); }

void int8_cases(const Shape& sh, const std::vector<GemmPath>& paths, const Peaks& peaks, uint64_t seed) {
  const int64_t M = sh.M, N = sh.N, K = sh.K;
  if (skipped("MatMulInt8 ", shape_str(M, N, K), paths)) return;
  const auto a = random_bytes<int8_t>(size_t(M * K), seed);
  const auto b = random_bytes<int8_t>(size_t(N * K), seed + 1);
  const auto bs = random_floats(size_t(N), 0.001f, 0.01f, seed + 2), bias = random_floats(size_t(N), -1.f, 1.f, seed + 3);
  const std::vector<float> as{0.0173f};
  const size_t set_bytes = size_t(M * K + N * K + 8 * N + 4 * M * N);
  const int sets = set_count(set_bytes);
  Sets<int8_t> da(a, sets), db(b, sets);
  Sets<float> dbs(bs, sets), dbias(bias, sets), das(as, sets), dy(size_t(M * N), sets);
  const auto rows = check_rows(M);
  for (GemmPath p : paths) {
    Case c;
    c.kernel = std::string("MatMulInt8 ") + path_label(p);
    c.shape = shape_str(M, N, K);
    c.M = M, c.N = N, c.K = K;
    c.sets = sets;
    c.y0 = dy[0];
    c.launch = [&, p](int s) {
      return quantc::cuda::matmul_int8_path(da[s], das[s], db[s], dbs[s], dbias[s], dy[s], M, N, K, p, nullptr);
    };
    c.reference = [&] {
      const auto asub = take_rows(a, K, rows);
      std::vector<float> y(rows.size() * size_t(N));
      quantc::matmul_int8(asub.data(), b.data(), int64_t(rows.size()), N, K, as[0], bs.data(), bias.data(), y.data(),
                          quantc::Isa::Reference);
      return y;
    };
    c.decode = M <= 8;
    c.bytes = double(N * K + M * K + 4 * M * N + 8 * N);
    c.slow = p == GemmPath::Simple;
    push(run_case(c, peaks, "int8 " + c.shape + " seed " + std::to_string(seed)));
  }
  // The int8 peer on prefill shapes: cuBLASLt int8 x int8 -> int32 (no scales, no float output).
  if (M > 8 && !g_dead && std::find(paths.begin(), paths.end(), GemmPath::Tile) != paths.end()) {
    const double lt = cublaslt_int8_ms(M, N, K);
    if (lt > 0) {
      Row r;
      r.kernel = "cuBLASLt int8->int32 (peer)";
      r.shape = shape_str(M, N, K);
      r.check = "peer";
      r.ms = lt;
      r.rate = 2.0 * M * N * K / (lt * 1e-3) / 1e12;
      r.unit = "TOPS (int8 peak)";
      r.peak_frac = peaks.int8_tops > 0 ? r.rate / peaks.int8_tops : 0;
      push(r);
    }
  }
}

// MatMulInt4Int8 with int8 A (float_a = false) or float A quantized inside.
void int4_cases(const Shape& sh, bool float_a, const std::vector<GemmPath>& paths, const Peaks& peaks, uint64_t seed) {
  const int64_t M = sh.M, N = sh.N, K = sh.K, G = sh.G;
  const std::string op = float_a ? "MatMulInt4Int8 f32A " : "MatMulInt4Int8 ";
  const std::string shape = shape_str(M, N, K, " G=" + std::to_string(G));
  if (skipped(op, shape, paths)) return;
  const auto a = random_bytes<int8_t>(float_a ? 0 : size_t(M * K), seed);
  const auto x = float_a ? activations(size_t(M * K), seed) : std::vector<float>{};
  const auto w = random_bytes<uint8_t>(size_t(N * K / 2), seed + 1);
  const auto ws = random_floats(size_t(N * (K / G)), 0.002f, 0.02f, seed + 2), bias = random_floats(size_t(N), -1.f, 1.f, seed + 3);
  const std::vector<float> as{float_a ? 1.0f : 0.0219f};
  const size_t set_bytes = size_t(M * K * (float_a ? 4 : 1) + N * K / 2 + 4 * N * (K / G) + 4 * N + 4 * M * N);
  const int sets = set_count(set_bytes);
  Sets<int8_t> da(a.empty() ? std::vector<int8_t>(1) : a, sets);
  Sets<float> dx(x.empty() ? std::vector<float>(1) : x, sets);
  Sets<uint8_t> dw(w, sets);
  Sets<float> dws(ws, sets), dbias(bias, sets), das(as, sets), dy(size_t(M * N), sets);
  Dev<uint8_t> scratch(float_a ? quantc::cuda::matmul_int4_f32_scratch_bytes(M, K) : 1);
  const auto rows = check_rows(M);
  for (GemmPath p : paths) {
    Case c;
    c.kernel = op + path_label(p);
    c.shape = shape;
    c.M = M, c.N = N, c.K = K;
    c.sets = sets;
    c.y0 = dy[0];
    c.launch = [&, p](int s) {
      if (float_a)
        return quantc::cuda::matmul_int4_f32_path(dx[s], das[s], dw[s], dws[s], dbias[s], dy[s], M, N, K, G, scratch.p, p, nullptr);
      return quantc::cuda::matmul_int4_int8_path(da[s], das[s], dw[s], dws[s], dbias[s], dy[s], M, N, K, G, p, nullptr);
    };
    c.reference = [&] {
      const size_t R = rows.size();
      std::vector<float> y(R * size_t(N));
      if (!float_a) {
        const auto asub = take_rows(a, K, rows);
        quantc::matmul_int4_int8(asub.data(), w.data(), int64_t(R), N, K, G, as[0], ws.data(), bias.data(), y.data(), quantc::best_isa());
        return y;
      }
      // quantize_rows_int8, the GEMM without bias, then y * s[m] + bias[n] (matmul_int4_f32_packed's order).
      const auto xsub = take_rows(x, K, rows);
      std::vector<int8_t> q(R * size_t(K));
      std::vector<float> s(R), y0(R * size_t(N));
      quantc::quantize_rows_int8(xsub.data(), int64_t(R), K, q.data(), s.data(), quantc::Isa::Reference);
      quantc::matmul_int4_int8(q.data(), w.data(), int64_t(R), N, K, G, as[0], ws.data(), nullptr, y0.data(), quantc::best_isa());
      for (size_t m = 0; m < R; ++m)
        for (int64_t n = 0; n < N; ++n) {
          const float scaled = y0[m * N + n] * s[m];
          y[m * N + n] = scaled + bias[n];
        }
      return y;
    };
    c.decode = M <= 8;
    c.exact = !(p == GemmPath::GemvFloat || (p == GemmPath::Auto && M <= 8));  // float partial sums: relative norm
    c.bytes = double(N * K / 2 + 4 * N * (K / G) + M * K * (float_a ? 4 : 1) + 4 * M * N);
    c.slow = p == GemmPath::Simple;
    push(run_case(c, peaks, op + c.shape + " seed " + std::to_string(seed)));
  }
}

void fp8_cases(const Shape& sh, const std::vector<GemmPath>& paths, const Peaks& peaks, uint64_t seed) {
  const int64_t M = sh.M, N = sh.N, K = sh.K, G = sh.G, t = 1;
  if (skipped("MatMulInt4Fp8 ", shape_str(M, N, K, " G=" + std::to_string(G)), paths)) return;
  const int64_t row_bytes = (K + 1) / 2;
  const auto x = activations(size_t(M * K), seed);
  const auto w = random_bytes<uint8_t>(size_t(N * row_bytes), seed + 1);
  const auto ws = fp8_scales(size_t(N * (K / G)), seed + 2);
  const size_t set_bytes = size_t(4 * M * K + N * row_bytes + N * (K / G) + 4 * M * N);
  const int sets = set_count(set_bytes);
  Sets<float> dx(x, sets), dy(size_t(M * N), sets);
  Sets<uint8_t> dw(w, sets), dws(ws, sets);
  Dev<uint8_t> scratch(quantc::cuda::matmul_int4_fp8_scratch_bytes(M, K));
  const auto rows = check_rows(M);
  for (GemmPath p : paths) {
    Case c;
    c.kernel = std::string("MatMulInt4Fp8 ") + (p == GemmPath::Tile ? "tile fp16" : path_label(p));
    c.shape = shape_str(M, N, K, " G=" + std::to_string(G));
    c.M = M, c.N = N, c.K = K;
    c.sets = sets;
    c.y0 = dy[0];
    c.launch = [&, p](int s) {
      return quantc::cuda::matmul_int4_fp8_path(dx[s], dw[s], dws[s], dy[s], M, N, K, G, t, scratch.p, p, nullptr);
    };
    c.reference = [&] {
      const auto xsub = take_rows(x, K, rows);
      std::vector<float> y(rows.size() * size_t(N));
      quantc::matmul_int4_fp8(xsub.data(), w.data(), ws.data(), int64_t(rows.size()), N, K, G, t, y.data());
      return y;
    };
    // The simple path sums in double (exact, bit for bit); the GEMV and the tensor cores accumulate in float32.
    c.exact = p == GemmPath::Simple;
    c.tol = 1e-5;
    c.decode = M <= 8;
    c.bytes = double(N * row_bytes + N * (K / G) + 4 * M * K + 4 * M * N);
    c.fp16_peak = true;
    c.slow = p == GemmPath::Simple;
    push(run_case(c, peaks, "fp8 " + c.shape + " seed " + std::to_string(seed)));
  }
}

// The LLaMA-7B-like layers (N x K, each with one group size): decode M = 1, 8 (the simple path as the plain check, the GEMV, the
// tile GEMM), prefill M = 512, 2048 (the tile GEMM); MatMulInt4Fp8 last (decode: simple, GEMV, fp16 tensor-core GEMM; prefill: the
// tensor-core GEMM).
void layer_cases(const Peaks& peaks, uint64_t seed) {
  using P = GemmPath;
  const std::vector<Shape> layers = {{0, 4096, 4096, 128}, {0, 11008, 4096, 64}, {0, 4096, 11008, 32}};
  const std::vector<int64_t> decode_m = {1, 8}, prefill_m = {512, 2048};
  for (const Shape& l : layers) {
    for (int64_t M : decode_m) {
      int8_cases({M, l.N, l.K, 0}, {P::Simple, P::Gemv, P::Tile, P::Auto}, peaks, seed += 10);
      int4_cases({M, l.N, l.K, l.G}, false, {P::Simple, P::Gemv, P::GemvSeg, P::GemvFloat, P::Tile, P::Auto}, peaks, seed += 10);
      int4_cases({M, l.N, l.K, l.G}, true, {P::Gemv, P::Auto}, peaks, seed += 10);
    }
    for (int64_t M : prefill_m) {
      int8_cases({M, l.N, l.K, 0}, {P::Tile, P::Auto}, peaks, seed += 10);
      int4_cases({M, l.N, l.K, l.G}, false, {P::Tile}, peaks, seed += 10);
      int4_cases({M, l.N, l.K, l.G}, true, {P::Tile, P::Auto}, peaks, seed += 10);
    }
  }
  for (const Shape& l : layers) {
    for (int64_t M : decode_m) fp8_cases({M, l.N, l.K, l.G}, {P::Simple, P::Gemv, P::Tile}, peaks, seed += 10);
    for (int64_t M : prefill_m) fp8_cases({M, l.N, l.K, l.G}, {P::Tile}, peaks, seed += 10);
  }
}

}  // namespace

void gemm_suite(const Peaks& peaks) {
  std::printf("\nGEMM suite (each row printed when measured):\n");
  std::fflush(stdout);
  using P = GemmPath;
  // Edge shapes: N = 250 (partial tiles, odd GEMV blocks), int8 K = 528 (a K tail), fp8 K = 500 with G = 50 (odd row bytes,
  // unaligned weight rows, a padded k-tile), M = 1, 5 (GEMV), 70 (a partial row tile).
  const std::vector<int64_t> edge_m = quick() ? std::vector<int64_t>{1, 70} : std::vector<int64_t>{1, 5, 70};
  uint64_t seed = 1;
  // 1. the simple paths (plain loads, no tensor cores) on the edge shapes.
  for (int64_t M : edge_m) {
    int8_cases({M, 250, 528, 0}, {P::Simple}, peaks, seed += 10);
    int4_cases({M, 250, 512, 32}, false, {P::Simple}, peaks, seed += 10);
    int4_cases({M, 250, 512, 64}, true, {P::Simple}, peaks, seed += 10);
    fp8_cases({M, 250, 500, 50}, {P::Simple}, peaks, seed += 10);
  }
  // 2. GEMVs and tile GEMMs on the edge shapes (each path on every M: the tile GEMM with M = 1, the GEMV with M = 70).
  for (int64_t M : edge_m) {
    int8_cases({M, 250, 528, 0}, {P::Gemv, P::Tile, P::Auto}, peaks, seed += 10);
    int4_cases({M, 250, 512, 32}, false, {P::Gemv, P::GemvSeg, P::GemvFloat, P::Tile, P::Auto}, peaks, seed += 10);
    int4_cases({M, 250, 512, 128}, true, {P::Gemv, P::GemvFloat, P::Tile, P::Auto}, peaks, seed += 10);
    fp8_cases({M, 250, 500, 50}, {P::Gemv, P::Tile}, peaks, seed += 10);
  }
  // 3. a small square fp8 shape (quick), or the layers.
  if (quick()) fp8_cases({64, 256, 512, 128}, {P::Simple, P::Gemv, P::Tile}, peaks, seed += 10);
  else layer_cases(peaks, seed);
  if (g_dead) {
    // A fresh context for the suites after this one (this suite's buffers are gone; cuBLAS handles made before are not usable).
    std::printf("GEMM suite: the CUDA context was lost (%s); resetting the device\n", g_dead_reason.c_str());
    std::fflush(stdout);
    cudaDeviceReset();
  }
}

}  // namespace qcb
