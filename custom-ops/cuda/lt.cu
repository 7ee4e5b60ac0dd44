// The GEMMs through cuBLASLt: MatMulInt8's int8 tensor-core GEMM (int32 out) with quantc's bit-exact epilogue, and
// MatMulInt4Fp8's FP8 GEMM (sm_89+) on the weight expanded once to float8 (int4_fp8_pack) with the per-token epilogue.
// cuBLASLt is loaded at the first call (dlopen), not linked, so libquantc_ops loads on machines without CUDA's libraries;
// where it is missing or offers no algorithm for a shape, the callers take quantc's own kernels.
#include <cublasLt.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "quantc/cuda_lt.h"
#include "quantc/cuda_ops.h"

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
enum class Kind { Int8, Fp8 };

struct Plan {
  int device;
  Kind kind;
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

// The plan of (device, kind, M, N, K), made on first use; null when cuBLASLt has no algorithm for it.
const Plan* plan_for(int device, Kind kind, int64_t M, int64_t N, int64_t K, cublasLtHandle_t* handle, void** workspace) {
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
    if (p.device == device && p.kind == kind && p.M == M && p.N == N && p.K == K) return p.ok ? &p : nullptr;
  Plan p{device, kind, M, N, K};
  const bool fp8 = kind == Kind::Fp8;
  const cudaDataType_t in = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_8I, out = fp8 ? CUDA_R_32F : CUDA_R_32I;
  // Row-major Y^T view: C [N, M] column-major (ld N) = B [N, K] row-major (= K x N column-major, transposed) x A^T (K x M).
  cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  if (lt.desc_create(&p.op, fp8 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32I, out) == CUBLAS_STATUS_SUCCESS &&
      lt.desc_set(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)) == CUBLAS_STATUS_SUCCESS &&
      lt.desc_set(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)) == CUBLAS_STATUS_SUCCESS &&
      lt.layout_create(&p.la, in, uint64_t(K), uint64_t(N), K) == CUBLAS_STATUS_SUCCESS &&
      lt.layout_create(&p.lb, in, uint64_t(K), uint64_t(M), K) == CUBLAS_STATUS_SUCCESS &&
      lt.layout_create(&p.lc, out, uint64_t(N), uint64_t(M), N) == CUBLAS_STATUS_SUCCESS) {
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
  const Plan* p = plan_for(device, Kind::Int8, M, N, K, &handle, &workspace);
  if (!p) return cudaErrorNotSupported;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int32_t* acc = nullptr;
  if (int e = scratch_alloc(reinterpret_cast<void**>(&acc), size_t(M * N) * sizeof(int32_t), st); e != cudaSuccess) return e;
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
  scratch_free(acc, st);
  return e;
}

// ---- MatMulInt4Fp8 (quantc/gemm_fp8.h): b[n][k] = fp8(q[n][k] * scale[n][k / G]) once; per call a[m][k] = fp8(x[m][k] / s_m) with
// s_m = max(max_k |x[m][k]|, 1e-12) / 448, the FP8 GEMM in float32, then y[m][n] = acc * (s_m * 2^-t).

namespace {

__global__ void pack_fp8(const uint8_t* __restrict__ w, const uint8_t* __restrict__ w_scale, uint8_t* __restrict__ b, int64_t N, int64_t K,
                         int64_t G) {
  const int64_t row_bytes = (K + 1) / 2, groups = K / G;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * K; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / K, k = i % K;
    const int q4 = (w[n * row_bytes + (k >> 1)] >> ((k & 1) * 4)) & 0xF;
    const __nv_fp8_e4m3 s = *reinterpret_cast<const __nv_fp8_e4m3*>(w_scale + n * groups + k / G);
    const float v = __fmul_rn(float(q4 >= 8 ? q4 - 16 : q4), float(s));  // exact: 4 bits times 4 bits
    b[i] = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  }
}

// One block per row: s_m, then the row in float8 (a true division, round to nearest even, saturating).
__global__ void quantize_rows_to_fp8(const float* __restrict__ x, uint8_t* __restrict__ a, float* __restrict__ s, int64_t K) {
  __shared__ float part[32];
  __shared__ int nan_part[32];
  const float* xr = x + blockIdx.x * K;
  float mx = 0.0f;
  int nan = 0;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const float v = xr[k];
    mx = fmaxf(mx, fabsf(v));
    nan |= isnan(v);
  }
  for (int o = 16; o > 0; o >>= 1) {
    mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, o));
    nan |= __shfl_xor_sync(0xFFFFFFFFu, nan, o);
  }
  if ((threadIdx.x & 31) == 0) { part[threadIdx.x >> 5] = mx; nan_part[threadIdx.x >> 5] = nan; }
  __syncthreads();
  if (threadIdx.x < 32) {
    const int warps = blockDim.x >> 5;
    mx = threadIdx.x < warps ? part[threadIdx.x] : 0.0f;
    nan = threadIdx.x < warps ? nan_part[threadIdx.x] : 0;
    for (int o = 16; o > 0; o >>= 1) {
      mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, o));
      nan |= __shfl_xor_sync(0xFFFFFFFFu, nan, o);
    }
    if (threadIdx.x == 0) part[0] = nan ? __int_as_float(0x7fc00000) : __fdiv_rn(fmaxf(mx, 1e-12f), 448.0f);
  }
  __syncthreads();
  const float sm = part[0];
  if (threadIdx.x == 0) s[blockIdx.x] = sm;
  uint8_t* ar = a + blockIdx.x * K;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) ar[k] = __nv_cvt_float_to_fp8(__fdiv_rn(xr[k], sm), __NV_SATFINITE, __NV_E4M3);
}

__global__ void scale_rows(float* __restrict__ y, const float* __restrict__ s, float inv_t, int64_t M, int64_t N) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * N; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __fmul_rn(y[i], __fmul_rn(s[i / N], inv_t));
}

int grid_for(int64_t work) { return int(std::min<int64_t>((work + 255) / 256, 132 * 16)); }

}  // namespace

bool lt_fp8_available() {
  if (!api().ok) return false;
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  return major * 10 + minor >= 89;
}

int int4_fp8_pack(const uint8_t* w, const uint8_t* w_scale, uint8_t* b, int64_t N, int64_t K, int64_t group_size, void* stream) {
  if (N <= 0 || K <= 0 || group_size <= 0 || K % group_size) return cudaErrorInvalidValue;
  pack_fp8<<<grid_for(N * K), 256, 0, static_cast<cudaStream_t>(stream)>>>(w, w_scale, b, N, K, group_size);
  return cudaGetLastError();
}

size_t matmul_fp8_lt_scratch_bytes(int64_t M, int64_t K) { return (size_t(M * K) + 255) / 256 * 256 + size_t(M) * sizeof(float); }

int matmul_fp8_lt(const float* x, const uint8_t* b, float* y, int64_t M, int64_t N, int64_t K, int64_t t_exponent, void* scratch,
                  void* stream) {
  if (!lt_fp8_available()) return cudaErrorNotSupported;
  if (M <= 0 || N <= 0 || K <= 0 || K % 16 || !aligned(b, 16) || !aligned(y, 16) || !aligned(scratch, 256)) return cudaErrorNotSupported;
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  const Plan* p = plan_for(device, Kind::Fp8, M, N, K, &handle, &workspace);
  if (!p) return cudaErrorNotSupported;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  uint8_t* a = static_cast<uint8_t*>(scratch);
  float* s = reinterpret_cast<float*>(a + (size_t(M * K) + 255) / 256 * 256);
  quantize_rows_to_fp8<<<unsigned(M), 256, 0, st>>>(x, a, s, K);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  const float one = 1.0f, zero = 0.0f;
  if (api().matmul(handle, p->op, &one, b, p->la, a, p->lb, &zero, y, p->lc, y, p->lc, &p->algo, workspace, kWorkspace, st) !=
      CUBLAS_STATUS_SUCCESS)
    return cudaErrorUnknown;
  scale_rows<<<grid_for(M * N), 256, 0, st>>>(y, s, ldexpf(1.0f, -static_cast<int>(t_exponent)), M, N);
  return cudaGetLastError();
}

}  // namespace quantc::cuda
