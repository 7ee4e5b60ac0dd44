// quantc_cuda_bench: every CUDA kernel of the ai.quantc ops checked against its CPU kernel and timed next to its peers
// (cuBLAS fp16 GEMM, cuBLASLt int8 GEMM, a float selective scan), with the measured ceilings of this GPU.
// Usage: quantc_cuda_bench [table.md]   (QC_QUICK=1: small shapes, a smoke run). Exit 1 when any check fails.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "quantc/cuda_ops.h"
#include "suites.h"

#define QC_CUBLAS(call)                                                                        \
  do {                                                                                         \
    cublasStatus_t s_ = (call);                                                                \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
      std::fprintf(stderr, "%s:%d: %s -> cuBLAS status %d\n", __FILE__, __LINE__, #call, int(s_)); \
      std::exit(3);                                                                            \
    }                                                                                          \
  } while (0)

namespace qcb {

bool quick() {
  static const bool q = [] { const char* v = std::getenv("QC_QUICK"); return v && std::strcmp(v, "1") == 0; }();
  return q;
}

namespace {

cublasHandle_t blas() {
  static cublasHandle_t h = [] { cublasHandle_t x; QC_CUBLAS(cublasCreate(&x)); return x; }();
  return h;
}

__global__ void fill_half(__half* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
    p[i] = __float2half((float(h & 0xFFFF) / 65535.f - 0.5f) * 0.25f);
  }
}

__global__ void fill_i8(int8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
    p[i] = int8_t(int(h % 255) - 127);
  }
}

// Random fp16 operands (device-side fill: gigabytes would take long from the host), rotating sets.
struct HalfGemm {
  int64_t M, N, K;
  int sets;
  std::vector<Dev<__half>> a, b, c;
  HalfGemm(int64_t m, int64_t n, int64_t k) : M(m), N(n), K(k) {
    sets = sets_for(size_t((M * K + N * K + M * N) * 2));
    for (int s = 0; s < sets; ++s) {
      a.emplace_back(size_t(M * K)); b.emplace_back(size_t(N * K)); c.emplace_back(size_t(M * N));
      fill_half<<<1024, 256>>>(a.back().p, a.back().n, 17u + s);
      fill_half<<<1024, 256>>>(b.back().p, b.back().n, 91u + s);
      QC_CHECK(cudaGetLastError());
    }
  }
  void run(int s) {
    const float one = 1.f, zero = 0.f;
    // column-major view: C^T[N, M] = B[N, K] (as K x N, transposed) times A^T
    QC_CUBLAS(cublasGemmEx(blas(), CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, b[s].p, CUDA_R_16F, int(K), a[s].p,
                           CUDA_R_16F, int(K), &zero, c[s].p, CUDA_R_16F, int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
};

}  // namespace

// Measured peer times by shape (a vector: std::map does not compile under nvcc 11.8 with clang as its host compiler).
struct Memo {
  struct Entry { int64_t M, N, K; double ms; };
  std::vector<Entry> entries;
  const double* find(int64_t M, int64_t N, int64_t K) const {
    for (const Entry& e : entries)
      if (e.M == M && e.N == N && e.K == K) return &e.ms;
    return nullptr;
  }
  double add(int64_t M, int64_t N, int64_t K, double ms) { entries.push_back({M, N, K, ms}); return ms; }
};

double cublas_fp16_ms(int64_t M, int64_t N, int64_t K) {
  static Memo memo;
  if (const double* ms = memo.find(M, N, K)) return *ms;
  HalfGemm g(M, N, K);
  return memo.add(M, N, K, time_ms([&](int s) { g.run(s); }, g.sets, quick() ? 3 : 10, quick() ? 10 : 50));
}

namespace {

double copy_gbs() {
  const size_t bytes = quick() ? (size_t{256} << 20) : (size_t{2} << 30);
  Dev<uint8_t> src(bytes), dst(bytes);
  QC_CHECK(cudaMemset(src.p, 0x5A, bytes));
  double ms = time_ms([&](int) { QC_CHECK(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice)); }, 1, 3, quick() ? 5 : 20);
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

double fp16_tflops() {
  const int64_t n = quick() ? 4096 : 8192;
  double ms = cublas_fp16_ms(n, n, n);
  return 2.0 * n * n * n / (ms * 1e-3) / 1e12;
}

// cuBLASLt int8 x int8 -> int32 (A row-major [M, K] times B [N, K]^T: column-major "TN"), the int8 peer.
struct LtInt8 {
  cublasLtHandle_t lt = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
  Dev<uint8_t> ws;
  LtInt8(int64_t M, int64_t N, int64_t K) : ws(size_t{32} << 20) {
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) return;
    if (cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32I, CUDA_R_32I) != CUBLAS_STATUS_SUCCESS) return;
    cublasOperation_t t = CUBLAS_OP_T, nn = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &nn, sizeof(nn));
    // C^T [N, M] (column-major, ld N) = B [N, K] (stored K-major: K x N column-major, transposed) * A^T (K x M)
    cublasLtMatrixLayoutCreate(&la, CUDA_R_8I, uint64_t(K), uint64_t(N), int64_t(K));
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_8I, uint64_t(K), uint64_t(M), int64_t(K));
    cublasLtMatrixLayoutCreate(&lc, CUDA_R_32I, uint64_t(N), uint64_t(M), int64_t(N));
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    size_t wsb = ws.bytes();
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    if (cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &res, &found) == CUBLAS_STATUS_SUCCESS && found > 0) {
      algo = res.algo;
      ok = true;
    }
    cublasLtMatmulPreferenceDestroy(pref);
  }
  ~LtInt8() {
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (op) cublasLtMatmulDescDestroy(op);
    if (lt) cublasLtDestroy(lt);
  }
  void run(const int8_t* a, const int8_t* b, int32_t* c) {
    const int32_t one = 1, zero = 0;
    QC_CUBLAS(cublasLtMatmul(lt, op, &one, b, la, a, lb, &zero, c, lc, c, lc, &algo, ws.p, ws.bytes(), nullptr));
  }
};

}  // namespace

// cuBLASLt int8 GEMM median ms for [M, K] x [N, K]^T, or -1 where cuBLASLt has no int8 algorithm for it.
double cublaslt_int8_ms(int64_t M, int64_t N, int64_t K) {
  static Memo memo;
  if (const double* known = memo.find(M, N, K)) return *known;
  LtInt8 lt(M, N, K);
  double ms = -1;
  if (lt.ok) {
    const int sets = sets_for(size_t(M * K + N * K + 4 * M * N));
    std::vector<Dev<int8_t>> a, b;
    std::vector<Dev<int32_t>> c;
    for (int s = 0; s < sets; ++s) {
      a.emplace_back(size_t(M * K)); b.emplace_back(size_t(N * K)); c.emplace_back(size_t(M * N));
      fill_i8<<<1024, 256>>>(a.back().p, a.back().n, 5u + s);
      fill_i8<<<1024, 256>>>(b.back().p, b.back().n, 77u + s);
      QC_CHECK(cudaGetLastError());
    }
    ms = time_ms([&](int s) { lt.run(a[s].p, b[s].p, c[s].p); }, sets, quick() ? 3 : 10, quick() ? 10 : 50);
  }
  return memo.add(M, N, K, ms);
}

}  // namespace qcb

int main(int argc, char** argv) {
  using namespace qcb;
  int dev = 0;
  QC_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  QC_CHECK(cudaGetDeviceProperties(&prop, dev));
  int driver = 0, runtime = 0;
  QC_CHECK(cudaDriverGetVersion(&driver));
  QC_CHECK(cudaRuntimeGetVersion(&runtime));
  std::printf("device: %s, sm_%d%d, %d SMs, %.1f GiB, L2 %.0f MB; driver %d, runtime %d; quantc::cuda::device_sm() = %d%s\n", prop.name,
              prop.major, prop.minor, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, prop.l2CacheSize / 1e6, driver,
              runtime, quantc::cuda::device_sm(), quick() ? " (QC_QUICK)" : "");
  Peaks peaks;
  peaks.copy_gbs = copy_gbs();
  peaks.fp16_tflops = fp16_tflops();
  const int64_t big = quick() ? 4096 : 8192;
  double i8 = cublaslt_int8_ms(big, big, big);
  peaks.int8_tops = i8 > 0 ? 2.0 * big * big * big / (i8 * 1e-3) / 1e12 : 0;
  std::printf("ceilings: copy %.0f GB/s (read + write), cuBLAS fp16 %.0f TFLOP/s, cuBLASLt int8 %.0f TOPS (%lld^3)\n", peaks.copy_gbs,
              peaks.fp16_tflops, peaks.int8_tops, (long long)big);
  std::fflush(stdout);

  const char* only = std::getenv("QC_ONLY");  // gemm | lt | mamba | hadamard
  auto want = [&](const char* s) { return !only || std::strstr(only, s); };
  if (want("gemm")) gemm_suite(peaks);
  if (want("lt")) lt_suite(peaks);
  if (want("mamba")) mamba_suite(peaks);
  if (want("hadamard")) hadamard_suite(peaks);

  std::ostringstream md;
  md << "| kernel | shape | check | median ms | rate | of measured peak | vs peer |\n|---|---|---|---:|---:|---:|---|\n";
  bool all_ok = true;
  for (const Row& r : rows()) {
    all_ok &= r.ok;
    char buf[512];
    std::snprintf(buf, sizeof buf, "| %s | %s | %s | %.4f | %.1f %s | %.0f%% | %s |\n", r.kernel.c_str(), r.shape.c_str(), r.check.c_str(),
                  r.ms, r.rate, r.unit.c_str(), 100 * r.peak_frac,
                  r.peer.empty() ? "" : (std::to_string(r.vs).substr(0, 4) + "x " + r.peer).c_str());
    md << buf;
  }
  std::printf("\n%s", md.str().c_str());
  std::printf("%s: %zu rows, %s\n", prop.name, rows().size(), all_ok ? "all checks passed" : "SOME CHECKS FAILED");
  if (argc > 1) {
    std::ofstream f(argv[1]);
    f << "device: " << prop.name << ", driver " << driver << ", runtime " << runtime << "\n\n";
    f << "ceilings: copy " << peaks.copy_gbs << " GB/s, cuBLAS fp16 " << peaks.fp16_tflops << " TFLOP/s, cuBLASLt int8 " << peaks.int8_tops
      << " TOPS\n\n" << md.str();
  }
  return all_ok ? 0 : 1;
}
