// MatMulInt8 through cuBLASLt's int8 tensor-core GEMM (int32 out) and quantc's epilogue (bit-exact dequantisation): the
// prefill path. cuBLASLt is loaded at the first call (dlopen), not linked, so libquantc_ops loads on machines without
// CUDA's libraries; where it is missing or offers no int8 algorithm for a shape, the caller takes its own tile GEMM.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "quantc/cuda_lt.h"

namespace quantc::cuda {
namespace {

// The cuBLASLt entry points used here, resolved once.
struct LtApi {
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
  bool ok = false;
};

template <typename F>
bool resolve(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  return f != nullptr;
}

const LtApi& api() {
  static const LtApi a = [] {
    LtApi r;
    void* lib = nullptr;
    for (const char* name : {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"})
      if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
    if (!lib) return r;
    r.ok = resolve(lib, "cublasLtCreate", r.create) && resolve(lib, "cublasLtMatmulDescCreate", r.desc_create) &&
           resolve(lib, "cublasLtMatmulDescSetAttribute", r.desc_set) && resolve(lib, "cublasLtMatrixLayoutCreate", r.layout_create) &&
           resolve(lib, "cublasLtMatmulPreferenceCreate", r.pref_create) &&
           resolve(lib, "cublasLtMatmulPreferenceSetAttribute", r.pref_set) &&
           resolve(lib, "cublasLtMatmulPreferenceDestroy", r.pref_destroy) &&
           resolve(lib, "cublasLtMatmulAlgoGetHeuristic", r.heuristic) && resolve(lib, "cublasLtMatmul", r.matmul);
    return r;
  }();
  return a;
}

constexpr size_t kWorkspace = size_t{32} << 20;

// One shape's descriptors and chosen algorithm on one device (kept for the process's life).
struct Plan {
  int device;
  int64_t M, N, K;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
};

struct State {
  std::mutex mu;
  std::vector<int> devices;  // per device: handle and workspace
  std::vector<cublasLtHandle_t> handles;
  std::vector<void*> workspaces;
  std::vector<Plan> plans;
};

State& state() {
  static State s;
  return s;
}

// The plan of (device, M, N, K), made on first use; null when cuBLASLt has no int8 algorithm for it.
const Plan* plan_for(int device, int64_t M, int64_t N, int64_t K, cublasLtHandle_t* handle, void** workspace) {
  const LtApi& lt = api();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  size_t d = 0;
  while (d < s.devices.size() && s.devices[d] != device) ++d;
  if (d == s.devices.size()) {
    cublasLtHandle_t h = nullptr;
    void* ws = nullptr;
    if (lt.create(&h) != CUBLAS_STATUS_SUCCESS) return nullptr;
    if (cudaMalloc(&ws, kWorkspace) != cudaSuccess) return nullptr;
    s.devices.push_back(device);
    s.handles.push_back(h);
    s.workspaces.push_back(ws);
  }
  *handle = s.handles[d];
  *workspace = s.workspaces[d];
  for (const Plan& p : s.plans)
    if (p.device == device && p.M == M && p.N == N && p.K == K) return p.ok ? &p : nullptr;
  Plan p{device, M, N, K};
  // Row-major Y^T view: C [N, M] column-major (ld N) = B [N, K] row-major (= K x N column-major, transposed) x A^T (K x M).
  cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  if (lt.desc_create(&p.op, CUBLAS_COMPUTE_32I, CUDA_R_32I) == CUBLAS_STATUS_SUCCESS &&
      lt.desc_set(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)) == CUBLAS_STATUS_SUCCESS &&
      lt.desc_set(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)) == CUBLAS_STATUS_SUCCESS &&
      lt.layout_create(&p.la, CUDA_R_8I, uint64_t(K), uint64_t(N), K) == CUBLAS_STATUS_SUCCESS &&
      lt.layout_create(&p.lb, CUDA_R_8I, uint64_t(K), uint64_t(M), K) == CUBLAS_STATUS_SUCCESS &&
      lt.layout_create(&p.lc, CUDA_R_32I, uint64_t(N), uint64_t(M), N) == CUBLAS_STATUS_SUCCESS) {
    cublasLtMatmulPreference_t pref = nullptr;
    if (lt.pref_create(&pref) == CUBLAS_STATUS_SUCCESS) {
      size_t ws = kWorkspace;
      lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
      cublasLtMatmulHeuristicResult_t res{};
      int found = 0;
      if (lt.heuristic(*handle, p.op, p.la, p.lb, p.lc, p.lc, pref, 1, &res, &found) == CUBLAS_STATUS_SUCCESS && found > 0) {
        p.algo = res.algo;
        p.ok = true;
      }
      lt.pref_destroy(pref);
    }
  }
  s.plans.push_back(p);
  return s.plans.back().ok ? &s.plans.back() : nullptr;
}

// y[m][n] = float(acc[m][n]) * (a_scale * b_scale[n]) + bias[n], rounded as the CPU reference (no FMA); 4 columns per thread.
__global__ void dequant_epilogue(const int32_t* __restrict__ acc, const float* __restrict__ a_scale, const float* __restrict__ b_scale,
                                 const float* __restrict__ bias, float* __restrict__ y, int64_t M, int64_t N) {
  const float sa = *a_scale;
  const int64_t quads = (N + 3) / 4, total = M * quads;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = i / quads, n0 = (i % quads) * 4;
    if ((N & 3) == 0) {
      const int4 c = *reinterpret_cast<const int4*>(acc + m * N + n0);
      const float4 s = *reinterpret_cast<const float4*>(b_scale + n0);
      const float4 b = bias ? *reinterpret_cast<const float4*>(bias + n0) : make_float4(0.f, 0.f, 0.f, 0.f);
      float4 o;
      o.x = __fadd_rn(__fmul_rn(__int2float_rn(c.x), __fmul_rn(sa, s.x)), b.x);
      o.y = __fadd_rn(__fmul_rn(__int2float_rn(c.y), __fmul_rn(sa, s.y)), b.y);
      o.z = __fadd_rn(__fmul_rn(__int2float_rn(c.z), __fmul_rn(sa, s.z)), b.z);
      o.w = __fadd_rn(__fmul_rn(__int2float_rn(c.w), __fmul_rn(sa, s.w)), b.w);
      *reinterpret_cast<float4*>(y + m * N + n0) = o;
    } else {
      for (int64_t n = n0; n < n0 + 4 && n < N; ++n)
        y[m * N + n] = __fadd_rn(__fmul_rn(__int2float_rn(acc[m * N + n]), __fmul_rn(sa, b_scale[n])), bias ? bias[n] : 0.0f);
    }
  }
}

bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

}  // namespace

bool lt_int8_available() { return api().ok; }

int matmul_int8_lt(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale, const float* bias, float* y, int64_t M,
                   int64_t N, int64_t K, void* stream) {
  if (!api().ok) return cudaErrorNotSupported;
  if (M <= 0 || N <= 0 || K <= 0 || K % 4 || !aligned(a, 16) || !aligned(b, 16)) return cudaErrorNotSupported;
  if ((N & 3) == 0 && (!aligned(b_scale, 16) || !aligned(y, 16) || (bias && !aligned(bias, 16)))) return cudaErrorNotSupported;
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  const Plan* p = plan_for(device, M, N, K, &handle, &workspace);
  if (!p) return cudaErrorNotSupported;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int32_t* acc = nullptr;
  if (cudaError_t e = cudaMallocAsync(reinterpret_cast<void**>(&acc), size_t(M * N) * sizeof(int32_t), st); e != cudaSuccess) return e;
  const int32_t one = 1, zero = 0;
  const cublasStatus_t bs = api().matmul(handle, p->op, &one, b, p->la, a, p->lb, &zero, acc, p->lc, acc, p->lc, &p->algo, workspace,
                                         kWorkspace, st);
  cudaError_t e = bs == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorUnknown;
  if (e == cudaSuccess) {
    const int64_t work = M * ((N + 3) / 4);
    const int blocks = int(std::min<int64_t>((work + 255) / 256, 132 * 16));
    dequant_epilogue<<<blocks, 256, 0, st>>>(acc, a_scale, b_scale, bias, y, M, N);
    e = cudaGetLastError();
  }
  cudaFreeAsync(acc, st);
  return e;
}

}  // namespace quantc::cuda
