// Shared pieces of the CUDA harness (quantc_cuda_bench): checked CUDA calls, random inputs, poisoned outputs,
// event timing (median after warm-up, rotating input sets), error norms, and the result table.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#define QC_CHECK(call)                                                                                       \
  do {                                                                                                       \
    cudaError_t e_ = (call);                                                                                 \
    if (e_ != cudaSuccess) {                                                                                 \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));         \
      std::exit(3);                                                                                          \
    }                                                                                                        \
  } while (0)

// A launch wrapper's int result (cudaError_t) and the last error after it.
#define QC_LAUNCH(call)                                                                                      \
  do {                                                                                                       \
    int r_ = (call);                                                                                         \
    if (r_ != 0) {                                                                                           \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #call,                                   \
                   cudaGetErrorString(static_cast<cudaError_t>(r_)));                                        \
      std::exit(3);                                                                                          \
    }                                                                                                        \
    QC_CHECK(cudaGetLastError());                                                                            \
  } while (0)

namespace qcb {

// The harness's random numbers: splitmix64 with a fixed seed (not <random>: libstdc++ 12's random.h does not compile
// under nvcc 11.8 with clang as its host compiler).
struct Rng {
  uint64_t s = 20261204;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int uniform_int(int lo, int hi) { return lo + static_cast<int>(next() % static_cast<uint64_t>(hi - lo + 1)); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>((next() >> 40) * 0x1.0p-24); }
};

inline Rng& rng() {
  static Rng g;
  return g;
}

// Random int8 in [lo, hi], never all zero.
inline std::vector<int8_t> rand_i8(size_t n, int lo = -127, int hi = 127) {
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(rng().uniform_int(lo, hi));
  if (n) v[0] = static_cast<int8_t>(hi);
  return v;
}
inline std::vector<uint8_t> rand_u8(size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(rng().next() >> 56);
  return v;
}
inline std::vector<float> rand_f32(size_t n, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(n);
  for (auto& x : v) x = rng().uniform(lo, hi);
  return v;
}

// A device buffer (freed on scope exit).
template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  Dev() = default;
  explicit Dev(size_t count) : n(count) { QC_CHECK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T))); }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) { upload(h); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  Dev(Dev&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; o.n = 0; }
  ~Dev() { if (p) cudaFree(p); }
  void upload(const std::vector<T>& h) { QC_CHECK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    QC_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  // Fills with 0xFF bytes (a NaN for floats, -1 for ints): an element no kernel wrote stays visible.
  void poison() { QC_CHECK(cudaMemset(p, 0xFF, n * sizeof(T))); }
  size_t bytes() const { return n * sizeof(T); }
};

// ||got - ref|| / ||ref|| in double; NaN anywhere (or a size mismatch) gives +inf.
template <typename A, typename B>
double rel_err(const std::vector<A>& got, const std::vector<B>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
    if (std::isnan(g) || std::isnan(r)) return INFINITY;
    num += (g - r) * (g - r);
    den += r * r;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Number of elements that differ bitwise (exact checks); -1 on a size mismatch.
template <typename T>
long long bit_diffs(const std::vector<T>& got, const std::vector<T>& ref) {
  if (got.size() != ref.size()) return -1;
  long long d = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &ref[i], sizeof(T)) != 0) ++d;
  return d;
}

// Milliseconds per call of fn(i) (i = the input set to use, rotating over `sets`) with CUDA events, after `warmup` calls: the
// calls run back to back in batches of up to 10 between two events (so the host's launch latency overlaps the device's work,
// as in a model's run of many ops), and the median batch's time per call is returned. `reps` calls in all (5 batches at least).
inline double time_ms(const std::function<void(int)>& fn, int sets = 1, int warmup = 10, int reps = 50) {
  cudaEvent_t a, b;
  QC_CHECK(cudaEventCreate(&a));
  QC_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) fn(i % sets);
  QC_CHECK(cudaDeviceSynchronize());
  const int batch = std::max(1, std::min(10, reps / 5)), batches = std::max(5, reps / batch);
  std::vector<float> t(batches);
  int call = 0;
  for (int i = 0; i < batches; ++i) {
    QC_CHECK(cudaEventRecord(a));
    for (int j = 0; j < batch; ++j) fn(call++ % sets);
    QC_CHECK(cudaEventRecord(b));
    QC_CHECK(cudaEventSynchronize(b));
    QC_CHECK(cudaEventElapsedTime(&t[i], a, b));
    t[i] /= batch;
  }
  QC_CHECK(cudaGetLastError());
  QC_CHECK(cudaEventDestroy(a));
  QC_CHECK(cudaEventDestroy(b));
  std::nth_element(t.begin(), t.begin() + batches / 2, t.end());
  return t[batches / 2];
}

// How many rotating input sets keep `bytes_per_set` out of the L2 (60 MB on an H200): at least 2, total >= 256 MB.
inline int sets_for(size_t bytes_per_set) {
  size_t want = (size_t{256} << 20) / std::max<size_t>(bytes_per_set, 1) + 1;
  return static_cast<int>(std::clamp<size_t>(want, 2, 64));
}

// One line of the result table.
struct Row {
  std::string kernel, shape;
  std::string check;   // "exact", "rel 3.1e-07", or "FAIL ..."
  bool ok = true;
  double ms = 0;       // median milliseconds
  double rate = 0;     // TOPS (ops) or GB/s (bytes), as `unit`
  std::string unit;    // "TOPS" or "GB/s"
  double peak_frac = 0;  // rate / the measured ceiling of that unit
  double vs = 0;         // peer time / this time (> 1: faster than the peer)
  std::string peer;      // the peer's name ("cuBLAS fp16", "float scan", ...)
};

struct Peaks {
  double copy_gbs = 0;      // device-to-device copy, bytes read + written
  double fp16_tflops = 0;   // a large cuBLAS fp16 GEMM
  double int8_tops = 0;     // a large cuBLASLt int8 GEMM (0 when not available)
};

inline std::vector<Row>& rows() {
  static std::vector<Row> r;
  return r;
}

}  // namespace qcb
