// CUDA kernels of QSelectiveScan and QCausalConv1d (quantc/cuda_ops.h), the arithmetic of cpu/mamba.cpp's reference
// loops (scan_rows, conv_rows).
//
// Scan: a block holds kChan channels of one batch row, kLanes lanes per channel, each lane NS of the channel's states
// in registers (state n = lane * NS + j), so Mamba-2.8B (d_inner 5120, d_state 16: NS = 2) runs 40960 threads in 320
// blocks. Time goes in chunks of kT steps: the chunk's x, dt, z (kT x kChan, coalesced along dim) and B, C (kT x N,
// shared by every channel) are loaded into registers one chunk ahead, then staged into shared memory with the
// per-(t, d) work done once (softplus(dt), dt * x * B_scale, x * x_scale, silu(z)); the lanes run the recurrence
// (one expf per state and step), reduce C . h with three shuffles, and the epilogue writes y (and y_q) coalesced.
// Conv: one thread per (channel, 16 time steps), coalesced along dim, the window read through L1.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernel_util.cuh"
#include "quantc/cuda_ops.h"

namespace quantc::cuda {
namespace {

using detail::launch;
using detail::quantize_i8;
using detail::silu;
using detail::softplus;

constexpr int kThreads = 128;  // per block: kThreads / LANES channels, LANES lanes each
constexpr int kT = 32;         // time steps per chunk

// The block's geometry for NS states per lane and LANES lanes per channel (a power of two dividing 32).
template <int NS, int LANES>
struct Geo {
  static constexpr int kChan = kThreads / LANES;        // channels per block
  static constexpr int kPer = kT * kChan / kThreads;    // x / dt / z tile elements per thread
  static constexpr int NP = LANES * NS;                 // states held per channel (>= N)
  static constexpr int kBC = kT * NP / kThreads;        // B (and C) tile elements per thread
  static_assert(kPer * kThreads == kT * kChan && kBC * kThreads == kT * NP, "tile split");
};

template <typename In>
struct ScanParams {
  int64_t length, dim, state;
  bool dt_softplus;
  const In *x, *dt, *B, *C, *z;
  const float *dt_bias, *A, *D, *h0;
  float *y, *h_out;
  int8_t* y_q;
  ScanScales s;  // a null scale reads as 1 (the float scan has none)
};

__device__ __forceinline__ float scale_of(const float* p) { return p ? *p : 1.f; }

// The chunk's inputs in registers (loaded one chunk ahead).
template <typename In, class G>
struct Prefetch {
  In x[G::kPer], dt[G::kPer], z[G::kPer], B[G::kBC], C[G::kBC];
};

template <typename In, class G>
__device__ __forceinline__ void load_chunk(const ScanParams<In>& p, int64_t b, int64_t d0, int64_t t0, Prefetch<In, G>& r) {
  constexpr int kChan = G::kChan, NP = G::NP;
  const int tid = threadIdx.x;
  const int64_t L = p.length, Dm = p.dim, N = p.state;
  const int64_t d = d0 + tid % kChan;
#pragma unroll
  for (int k = 0; k < G::kPer; ++k) {
    const int64_t t = t0 + (tid + k * kThreads) / kChan;
    const bool ok = t < L && d < Dm;
    const int64_t i = (b * L + t) * Dm + d;
    r.x[k] = ok ? p.x[i] : In(0);
    r.dt[k] = ok ? p.dt[i] : In(0);
    r.z[k] = ok && p.z ? p.z[i] : In(0);
  }
#pragma unroll
  for (int k = 0; k < G::kBC; ++k) {
    const int e = tid + k * kThreads;
    const int64_t t = t0 + e / NP, n = e % NP;
    const bool ok = t < L && n < N;
    const int64_t i = (b * L + t) * N + n;
    r.B[k] = ok ? p.B[i] : In(0);
    r.C[k] = ok ? p.C[i] : In(0);
  }
}

template <class G>
struct ScanSmem {
  float dt[kT][G::kChan], dbx[kT][G::kChan], xv[kT][G::kChan], gate[kT][G::kChan], acc[kT][G::kChan];
  float B[kT][G::NP], C[kT][G::NP];
};

template <typename In, int NS, int LANES>
__global__ void __launch_bounds__(kThreads) scan_kernel(const ScanParams<In> p) {
  using G = Geo<NS, LANES>;
  constexpr int kChan = G::kChan, kLanes = LANES, NP = G::NP;
  __shared__ ScanSmem<G> sm;
  const int tid = threadIdx.x;
  const int64_t b = blockIdx.y, d0 = int64_t(blockIdx.x) * kChan;
  const int64_t L = p.length, Dm = p.dim, N = p.state;
  const float xs = scale_of(p.s.x_scale), dts = scale_of(p.s.dt_scale), Bs = scale_of(p.s.B_scale);
  const float Cs = scale_of(p.s.C_scale), zs = scale_of(p.s.z_scale), ys = p.y_q ? *p.s.y_scale : 1.f;
  // Staging / epilogue role: channel tid % kChan (the same for every k of the tile).
  const int ec = tid % kChan;
  const int64_t ed = d0 + ec;
  const bool ed_ok = ed < Dm;
  const float bias = ed_ok && p.dt_bias ? p.dt_bias[ed] : 0.f;
  const float Dd = ed_ok && p.D ? p.D[ed] : 0.f;
  // Scan role: channel c, lane l, states l * NS + j.
  const int c = tid / kLanes, l = tid % kLanes;
  const int64_t d = d0 + c;
  float h[NS], A[NS];
#pragma unroll
  for (int j = 0; j < NS; ++j) {
    const int64_t n = l * NS + j;
    const bool ok = d < Dm && n < N;
    A[j] = ok ? p.A[d * N + n] : 0.f;
    h[j] = ok && p.h0 ? p.h0[(b * Dm + d) * N + n] : 0.f;
  }

  Prefetch<In, G> r;
  load_chunk<In, G>(p, b, d0, 0, r);
  for (int64_t t0 = 0; t0 < L; t0 += kT) {
    const int tn = static_cast<int>(L - t0 < kT ? L - t0 : kT);
    // Stage: the per-(t, d) work once, in the CPU's order of roundings.
#pragma unroll
    for (int k = 0; k < G::kPer; ++k) {
      const int t = (tid + k * kThreads) / kChan;
      const float xv = __fmul_rn(static_cast<float>(r.x[k]), xs);
      float dtv = __fadd_rn(__fmul_rn(static_cast<float>(r.dt[k]), dts), bias);
      if (p.dt_softplus) dtv = softplus(dtv);
      if (!ed_ok || t >= tn) dtv = 0.f;
      sm.dt[t][ec] = dtv;
      sm.dbx[t][ec] = __fmul_rn(__fmul_rn(dtv, xv), Bs);
      sm.xv[t][ec] = xv;
      sm.gate[t][ec] = p.z ? silu(__fmul_rn(static_cast<float>(r.z[k]), zs)) : 1.f;
    }
#pragma unroll
    for (int k = 0; k < G::kBC; ++k) {
      const int e = tid + k * kThreads;
      sm.B[e / NP][e % NP] = static_cast<float>(r.B[k]);
      sm.C[e / NP][e % NP] = static_cast<float>(r.C[k]);
    }
    __syncthreads();
    if (t0 + kT < L) load_chunk<In, G>(p, b, d0, t0 + kT, r);  // in flight during the recurrence
    // The recurrence: h = exp(dt * A) * h + (dt * x * B_scale) * B; acc = sum_n C[n] * h[n].
#pragma unroll 4
    for (int t = 0; t < tn; ++t) {
      const float dtv = sm.dt[t][c], dbx = sm.dbx[t][c];
      float acc = 0.f;
#pragma unroll
      for (int j = 0; j < NS; ++j) {
        h[j] = expf(dtv * A[j]) * h[j] + dbx * sm.B[t][l * NS + j];
        acc += sm.C[t][l * NS + j] * h[j];
      }
#pragma unroll
      for (int o = kLanes / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o, kLanes);
      if (l == 0) sm.acc[t][c] = acc;
    }
    __syncthreads();
    // Epilogue: y = acc * C_scale + D * x, times silu(z * z_scale); y_q; coalesced along dim.
#pragma unroll
    for (int k = 0; k < G::kPer; ++k) {
      const int t = (tid + k * kThreads) / kChan;
      if (t >= tn || !ed_ok) continue;
      float yv = __fadd_rn(__fmul_rn(sm.acc[t][ec], Cs), p.D ? __fmul_rn(Dd, sm.xv[t][ec]) : 0.f);
      if (p.z) yv = __fmul_rn(yv, sm.gate[t][ec]);
      const int64_t i = (b * L + t0 + t) * Dm + ed;
      p.y[i] = yv;
      if (p.y_q) p.y_q[i] = quantize_i8(yv, ys);
    }
    __syncthreads();  // the next chunk's staging overwrites the tiles
  }
  if (p.h_out) {
#pragma unroll
    for (int j = 0; j < NS; ++j) {
      const int64_t n = l * NS + j;
      if (d < Dm && n < N) p.h_out[(b * Dm + d) * N + n] = h[j];
    }
  }
}

template <typename In, int LANES>
void launch_lanes(const ScanParams<In>& p, int64_t batch, cudaStream_t st) {
  constexpr int kChan = Geo<1, LANES>::kChan;
  const dim3 grid(static_cast<unsigned>((p.dim + kChan - 1) / kChan), static_cast<unsigned>(batch));
  if (p.state <= LANES) launch(scan_kernel<In, 1, LANES>, grid, dim3(kThreads), 0, st, p);
  else if (p.state <= 2 * LANES) launch(scan_kernel<In, 2, LANES>, grid, dim3(kThreads), 0, st, p);
  else if (p.state <= 4 * LANES) launch(scan_kernel<In, 4, LANES>, grid, dim3(kThreads), 0, st, p);
  else if constexpr (8 * LANES >= kScanMaxState) launch(scan_kernel<In, 8, LANES>, grid, dim3(kThreads), 0, st, p);
  else if (p.state <= 8 * LANES) launch(scan_kernel<In, 8, LANES>, grid, dim3(kThreads), 0, st, p);
  else launch(scan_kernel<In, 16, LANES>, grid, dim3(kThreads), 0, st, p);
}

template <typename In>
int launch_scan(const ScanParams<In>& p, int64_t batch, int lanes, void* stream) {
  if (lanes != 0 && lanes != 4 && lanes != 8)
    throw std::invalid_argument("QSelectiveScan (CUDA): lanes " + std::to_string(lanes) + " (0, 4 or 8)");
  if (batch == 0 || p.dim == 0) return 0;
  if (batch > 65535) throw std::invalid_argument("QSelectiveScan (CUDA): batch " + std::to_string(batch) + " over 65535");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (lanes == 4) launch_lanes<In, 4>(p, batch, st);
  else launch_lanes<In, 8>(p, batch, st);
  return static_cast<int>(cudaGetLastError());
}

void check_scan_shape(int64_t batch, int64_t length, int64_t dim, int64_t state, bool inputs_ok) {
  static_assert(kScanMaxState == 64, "the dispatch of launch_lanes holds up to 64 states");
  if (batch < 0 || length < 0 || dim < 0 || state < 1 || state > kScanMaxState)
    throw std::invalid_argument("QSelectiveScan (CUDA): bad shape (batch " + std::to_string(batch) + ", length " + std::to_string(length) +
                                ", dim " + std::to_string(dim) + ", state " + std::to_string(state) + "; state 1.." +
                                std::to_string(kScanMaxState) + ")");
  if (!inputs_ok) throw std::invalid_argument("QSelectiveScan (CUDA): x, dt, A, B, C, y and the scales must not be null");
}

// --- causal depthwise conv1d
constexpr int kConvThreads = 128;
constexpr int kConvSteps = 16;

__global__ void __launch_bounds__(kConvThreads) conv_kernel(const ConvArgsCuda a) {
  const int64_t d = int64_t(blockIdx.x) * kConvThreads + threadIdx.x;
  if (d >= a.dim) return;
  const int64_t b = blockIdx.z, L = a.length, Dm = a.dim, K = a.kernel;
  const float xs = *a.x_scale;
  const float* w = a.weight + d * K;
  const float* st = a.state_in ? a.state_in + (b * Dm + d) * (K - 1) : nullptr;
  // Input at position p of the window (p < 0: the previous call's inputs from state_in, zeros without it).
  auto val = [&](int64_t q) -> float {
    if (q >= 0) return __fmul_rn(static_cast<float>(a.x[(b * L + q) * Dm + d]), xs);
    return st ? st[K - 1 + q] : 0.f;
  };
  const float bias = a.bias ? a.bias[d] : 0.f;
  const int64_t t0 = int64_t(blockIdx.y) * kConvSteps, t1 = t0 + kConvSteps < L ? t0 + kConvSteps : L;
  for (int64_t t = t0; t < t1; ++t) {
    float acc = bias;
    for (int64_t j = 0; j < K; ++j) acc = __fadd_rn(acc, __fmul_rn(w[j], val(t - (K - 1) + j)));
    a.y[(b * L + t) * Dm + d] = a.silu ? silu(acc) : acc;
  }
  if (a.state_out && blockIdx.y == gridDim.y - 1)
    for (int64_t j = 0; j < K - 1; ++j) a.state_out[(b * Dm + d) * (K - 1) + j] = val(L - (K - 1) + j);
}

}  // namespace

int selective_scan_int8(const ScanArgsCuda& a, void* stream) {
  const ScanScales& s = a.s;
  check_scan_shape(a.batch, a.length, a.dim, a.state,
                   (a.length == 0 || (a.x && a.dt && a.B && a.C && a.y)) && a.A && s.x_scale && s.dt_scale && s.B_scale && s.C_scale);
  if (a.z && !s.z_scale) throw std::invalid_argument("QSelectiveScan (CUDA): z without z_scale");
  if (a.y_q && !s.y_scale) throw std::invalid_argument("QSelectiveScan (CUDA): y_q without y_scale");
  ScanParams<int8_t> p{a.length, a.dim, a.state, a.dt_softplus, a.x, a.dt, a.B, a.C, a.z, a.dt_bias, a.A, a.D, a.h0, a.y, a.h_out,
                       a.y_q, s};
  return launch_scan(p, a.batch, a.lanes, stream);
}

int selective_scan_f32(const ScanArgsF32& a, void* stream) {
  check_scan_shape(a.batch, a.length, a.dim, a.state, (a.length == 0 || (a.x && a.dt && a.B && a.C && a.y)) && a.A);
  ScanParams<float> p{a.length, a.dim, a.state, a.dt_softplus, a.x, a.dt, a.B, a.C, a.z, a.dt_bias, a.A, a.D, a.h0, a.y, a.h_out,
                      nullptr, ScanScales{}};
  return launch_scan(p, a.batch, a.lanes, stream);
}

int causal_conv1d_int8(const ConvArgsCuda& a, void* stream) {
  if (a.batch < 0 || a.length < 0 || a.dim < 0 || a.kernel < 1)
    throw std::invalid_argument("QCausalConv1d (CUDA): bad shape (batch " + std::to_string(a.batch) + ", length " +
                                std::to_string(a.length) + ", dim " + std::to_string(a.dim) + ", kernel " + std::to_string(a.kernel) + ")");
  if (!a.x_scale || !a.weight || (a.length > 0 && (!a.x || !a.y)))  // an empty x or y may have no buffer
    throw std::invalid_argument("QCausalConv1d (CUDA): x, x_scale, weight and y must not be null");
  if (a.batch > 65535) throw std::invalid_argument("QCausalConv1d (CUDA): batch " + std::to_string(a.batch) + " over 65535");
  if (a.batch == 0 || a.dim == 0) return 0;
  const int64_t chunks = a.length > 0 ? (a.length + kConvSteps - 1) / kConvSteps : 1;  // L = 0 still writes state_out
  if (chunks > 65535) throw std::invalid_argument("QCausalConv1d (CUDA): length " + std::to_string(a.length) + " over 65535 * 16");
  const dim3 grid(static_cast<unsigned>((a.dim + kConvThreads - 1) / kConvThreads), static_cast<unsigned>(chunks),
                  static_cast<unsigned>(a.batch));
  launch(conv_kernel, grid, dim3(kConvThreads), 0, static_cast<cudaStream_t>(stream), a);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace quantc::cuda
