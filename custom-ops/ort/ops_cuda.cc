// ONNX Runtime registration of the ai.quantc ops' CUDA kernels (cuda/*.cu) for the CUDA execution provider.
// Compiled by the host compiler (ONNX Runtime's lite custom-op header does not compile under nvcc 11.8); built only
// with QUANTC_CUDA. Inputs and outputs are device tensors; shapes are checked here, on the host, as the CPU ops check
// them, and the kernels are enqueued on the session's compute stream (KernelContext::GetGPUComputeStream). Scratch
// memory is stream-ordered (quantc::cuda::scratch_alloc: quantc's memory pool, on that stream). The CUDA kernels take float32 scales and
// outputs; float16 graphs keep the CPU kernels (ONNX Runtime places a node whose types no CUDA kernel matches on the CPU).
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#include <onnxruntime_lite_custom_op.h>
#undef ORT_API_MANUAL_INIT

#include "common.h"

#include <cuda_runtime_api.h>

#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "quantc/cuda_lt.h"
#include "quantc/cuda_ops.h"
#include "quantc/hadamard.h"

namespace {

using Ort::Custom::Tensor;
using quantc_ort::attr_int;
using quantc_ort::shape_str;

[[noreturn]] void fail(const std::string& op, const std::string& msg) { quantc_ort::fail(op + " (CUDA)", msg); }

void* stream_of(OrtKernelContext* ctx) { return Ort::KernelContext(ctx).GetGPUComputeStream(); }

// Runs a kernel wrapper: its argument errors become the op's error, a launch error an ORT_FAIL.
template <typename F>
void launch(const std::string& op, F&& f) {
  int rc = 0;
  try {
    rc = f();
  } catch (const std::invalid_argument& e) {
    fail(op, e.what());
  }
  if (rc != 0) ORT_CXX_API_THROW("ai.quantc." + op + " (CUDA): " + cudaGetErrorString(static_cast<cudaError_t>(rc)), ORT_FAIL);
}

// Stream-ordered scratch: allocated on the stream, freed on it when the kernel's work is enqueued.
struct Scratch {
  Scratch(const std::string& op, size_t bytes, void* stream) : stream_(static_cast<cudaStream_t>(stream)) {
    if (bytes == 0) return;
    const int e = quantc::cuda::scratch_alloc(&p, bytes, stream_);
    if (e != cudaSuccess) ORT_CXX_API_THROW("ai.quantc." + op + " (CUDA): scratch of " + std::to_string(bytes) + " bytes: " +
                                            cudaGetErrorString(static_cast<cudaError_t>(e)), ORT_FAIL);
  }
  ~Scratch() { quantc::cuda::scratch_free(p, stream_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* p = nullptr;
  cudaStream_t stream_;
};

void need_scalar(const std::string& op, const char* what, int64_t count) {
  if (count != 1) fail(op, std::string(what) + " must be a scalar");
}

const float* opt_data(const std::string& op, const char* what, std::optional<const Tensor<float>*> t, int64_t count) {
  if (!t.has_value() || !*t) return nullptr;
  if ((*t)->NumberOfElement() != count) fail(op, std::string(what) + " must have " + std::to_string(count) + " elements");
  return (*t)->Data();
}

struct HadamardCuda {
  HadamardCuda(const OrtApi* api, const OrtKernelInfo* info) : normalize_(attr_int(api, info, "normalize", 1) != 0) {}
  void Compute(OrtKernelContext* ctx, const Tensor<float>& x, Tensor<float>& y) {
    auto shape = x.Shape();
    if (shape.empty()) fail("Hadamard", "input must have at least one axis");
    int64_t n = shape.back(), p2;
    int m;
    if (!quantc::hadamard_split(n, &p2, &m))
      fail("Hadamard", "last axis " + std::to_string(n) + " of " + shape_str(shape) + " is not 2^k times a supported order");
    float* out = y.Allocate(shape);
    const int64_t rows = n == 0 ? 0 : x.NumberOfElement() / n;
    launch("Hadamard", [&] { return quantc::cuda::hadamard(x.Data(), out, rows, n, normalize_, stream_of(ctx)); });
  }
  bool normalize_;
};

struct HadamardQuantizeInt8Cuda {
  HadamardQuantizeInt8Cuda(const OrtApi*, const OrtKernelInfo*) {}
  void Compute(OrtKernelContext* ctx, const Tensor<float>& x, const Tensor<float>& scale, Tensor<int8_t>& y) {
    const std::string op = "HadamardQuantizeInt8";
    auto shape = x.Shape();
    if (shape.empty()) fail(op, "input must have at least one axis");
    need_scalar(op, "scale", scale.NumberOfElement());
    int64_t n = shape.back(), p2;
    int m;
    if (!quantc::hadamard_split(n, &p2, &m)) fail(op, "last axis " + std::to_string(n) + " is not 2^k times a supported order");
    int8_t* out = y.Allocate(shape);
    const int64_t rows = n == 0 ? 0 : x.NumberOfElement() / n;
    launch(op, [&] { return quantc::cuda::hadamard_quantize_int8(x.Data(), scale.Data(), out, rows, n, stream_of(ctx)); });
  }
};

struct MatMulInt8Cuda {
  MatMulInt8Cuda(const OrtApi*, const OrtKernelInfo*) {}
  void Compute(OrtKernelContext* ctx, const Tensor<int8_t>& a, const Tensor<float>& a_scale, const Tensor<int8_t>& b,
               const Tensor<float>& b_scale, std::optional<const Tensor<float>*> bias, Tensor<float>& y) {
    const std::string op = "MatMulInt8";
    auto as = a.Shape(), bs = b.Shape();
    if (as.empty()) fail(op, "A must have at least one axis");
    if (bs.size() != 2) fail(op, "B must be 2-D [N, K], got " + shape_str(bs));
    const int64_t K = as.back(), N = bs[0];
    if (bs[1] != K) fail(op, "A " + shape_str(as) + " and B " + shape_str(bs) + " disagree on K");
    need_scalar(op, "A_scale", a_scale.NumberOfElement());
    if (b_scale.NumberOfElement() != N) fail(op, "B_scale must have N = " + std::to_string(N) + " elements");
    const float* bias_d = opt_data(op, "bias", bias, N);
    auto ys = as;
    ys.back() = N;
    float* out = y.Allocate(ys);
    const int64_t M = K == 0 ? 0 : a.NumberOfElement() / K;
    launch(op, [&] { return quantc::cuda::matmul_int8(a.Data(), a_scale.Data(), b.Data(), b_scale.Data(), bias_d, out, M, N, K, stream_of(ctx)); });
  }
};

// The shape checks shared by MatMulInt4Int8's int8-A and float-A kernels; returns M, N, K.
struct Int4Shape {
  int64_t M, N, K;
};
Int4Shape check_int4(const std::string& op, const std::vector<int64_t>& as, const std::vector<int64_t>& bs, int64_t a_count,
                     int64_t group, int64_t scale_count, int64_t a_scale_count) {
  if (as.empty()) fail(op, "A must have at least one axis");
  if (bs.size() != 2) fail(op, "B must be 2-D [N, K/2], got " + shape_str(bs));
  const int64_t K = as.back(), N = bs[0];
  if (bs[1] * 2 != K) fail(op, "A " + shape_str(as) + " and B " + shape_str(bs) + " disagree on K (B holds two int4 per byte)");
  if (K % 64) fail(op, "K = " + std::to_string(K) + " must be a multiple of 64");
  if (group != 32 && group != 64 && group != 128) fail(op, "group_size must be 32, 64 or 128");
  if (K % group) fail(op, "K must be a multiple of group_size");
  if (scale_count != N * (K / group))
    fail(op, "B_scale must be [N, K/group_size] = [" + std::to_string(N) + "," + std::to_string(K / group) + "]");
  need_scalar(op, "A_scale", a_scale_count);
  return {a_count / K, N, K};
}

// ROTATE (HadamardMatMulInt4Int8, float A only; or MatMulInt4Int8's older hadamard=1 attribute): each row of A transformed
// first, as the Hadamard kernel does, into stream-ordered scratch. SWIGLU (SwiGluMatMulInt4Int8, float A only): the [M, 2F]
// product goes to scratch, then the SwiGLU kernel writes Y [M, F].
template <typename TA, bool ROTATE = false, bool SWIGLU = false>
struct MatMulInt4Int8Cuda {
  static_assert(!ROTATE || std::is_same_v<TA, float>, "the Hadamard comes before the quantization: float32 A only");
  static_assert(!SWIGLU || (std::is_same_v<TA, float> && !ROTATE), "SwiGluMatMulInt4Int8: float32 A only");
  MatMulInt4Int8Cuda(const OrtApi* api, const OrtKernelInfo* info)
      : group_(attr_int(api, info, "group_size", 32)), hadamard_(ROTATE || attr_int(api, info, "hadamard", 0) != 0),
        normalize_(attr_int(api, info, ROTATE ? "normalize" : "hadamard_normalize", 1) != 0),
        gate_(SWIGLU ? attr_int(api, info, "gate", 0) : 0) {
    if (gate_ != 0 && gate_ != 1) fail("SwiGluMatMulInt4Int8", "gate must be 0 or 1, got " + std::to_string(gate_));
  }
  void Compute(OrtKernelContext* ctx, const Tensor<TA>& a, const Tensor<float>& a_scale, const Tensor<uint8_t>& b,
               const Tensor<float>& b_scale, std::optional<const Tensor<float>*> bias, Tensor<float>& y) {
    const std::string op = ROTATE ? "HadamardMatMulInt4Int8" : SWIGLU ? "SwiGluMatMulInt4Int8" : "MatMulInt4Int8";
    auto as = a.Shape();
    const Int4Shape s = check_int4(op, as, b.Shape(), a.NumberOfElement(), group_, b_scale.NumberOfElement(), a_scale.NumberOfElement());
    const float* bias_d = opt_data(op, "bias", bias, s.N);
    if (SWIGLU && s.N % 2) fail(op, "B must hold an even number of rows (the gate's and the up projection's), got " + shape_str(b.Shape()));
    auto ys = as;
    ys.back() = SWIGLU ? s.N / 2 : s.N;
    float* y_out = y.Allocate(ys);
    void* stream = stream_of(ctx);
    Scratch wide(op, SWIGLU ? static_cast<size_t>(s.M * s.N) * sizeof(float) : 0, stream);
    float* out = SWIGLU ? static_cast<float*>(wide.p) : y_out;
    if constexpr (std::is_same_v<TA, float>) {
      const float* x = a.Data();
      Scratch rotated(op, hadamard_ ? static_cast<size_t>(s.M * s.K) * sizeof(float) : 0, stream);
      if (hadamard_) {
        int64_t pow2;
        int order;
        if (!quantc::hadamard_split(s.K, &pow2, &order))
          fail(op, "the Hadamard transform: K = " + std::to_string(s.K) + " is not 2^k times a supported order");
        float* r = static_cast<float*>(rotated.p);
        launch(op, [&] { return quantc::cuda::hadamard(a.Data(), r, s.M, s.K, normalize_, stream); });
        x = r;
      }
      Scratch scratch(op, quantc::cuda::matmul_int4_f32_scratch_bytes(s.M, s.K), stream);
      launch(op, [&] {
        return quantc::cuda::matmul_int4_f32(x, a_scale.Data(), b.Data(), b_scale.Data(), bias_d, out, s.M, s.N, s.K, group_,
                                             scratch.p, stream);
      });
      if constexpr (SWIGLU) launch(op, [&] { return quantc::cuda::swiglu(out, y_out, s.M, s.N / 2, static_cast<int>(gate_), stream); });
    } else {
      if (hadamard_) fail(op, "hadamard=1 needs a float32 A (the transform comes before the quantization)");
      launch(op, [&] {
        return quantc::cuda::matmul_int4_int8(a.Data(), a_scale.Data(), b.Data(), b_scale.Data(), bias_d, out, s.M, s.N, s.K, group_, stream);
      });
    }
  }
  int64_t group_;
  bool hadamard_, normalize_;
  int64_t gate_;  // SwiGLU: which half of B's rows is the gate's
};

// With a constant weight (an initializer) on an sm_89+ device with cuBLASLt, the weight is expanded once to float8
// (int4_fp8_pack, kept on the device for the kernel's life) and each call runs cuBLASLt's FP8 GEMM; else quantc's own kernel.
struct MatMulInt4Fp8Cuda {
  MatMulInt4Fp8Cuda(const OrtApi* api, const OrtKernelInfo* info)
      : group_(attr_int(api, info, "group_size", 128)), t_exponent_(attr_int(api, info, "t_exponent", 0)) {
    Ort::ConstKernelInfo ki(info);
    int b_constant = 0, s_constant = 0;
    ki.GetTensorConstantInput(1, &b_constant);
    ki.GetTensorConstantInput(2, &s_constant);
    constant_weight_ = b_constant && s_constant;
  }
  ~MatMulInt4Fp8Cuda() {
    if (packed_) cudaFree(packed_);
  }
  MatMulInt4Fp8Cuda(const MatMulInt4Fp8Cuda&) = delete;
  MatMulInt4Fp8Cuda& operator=(const MatMulInt4Fp8Cuda&) = delete;

  void Compute(OrtKernelContext* ctx, const Tensor<float>& a, const Tensor<uint8_t>& b, const Tensor<Ort::Float8E4M3FN_t>& b_scale,
               Tensor<float>& y) {
    const std::string op = "MatMulInt4Fp8";
    auto as = a.Shape(), bs = b.Shape();
    if (as.empty()) fail(op, "A must have at least one axis");
    if (bs.size() != 2) fail(op, "B must be 2-D [N, ceil(K/2)], got " + shape_str(bs));
    const int64_t K = as.back(), N = bs[0];
    if (bs[1] != (K + 1) / 2) fail(op, "A " + shape_str(as) + " and B " + shape_str(bs) + " disagree on K (B holds two int4 per byte)");
    if (group_ <= 0 || K % group_) fail(op, "K = " + std::to_string(K) + " must be a multiple of group_size = " + std::to_string(group_));
    if (b_scale.NumberOfElement() != N * (K / group_))
      fail(op, "B_scale must be [N, K/group_size] = [" + std::to_string(N) + "," + std::to_string(K / group_) + "]");
    auto ys = as;
    ys.back() = N;
    float* out = y.Allocate(ys);
    const int64_t M = K == 0 ? 0 : a.NumberOfElement() / K;
    if (M == 0) return;
    void* stream = stream_of(ctx);
    const uint8_t* scales = reinterpret_cast<const uint8_t*>(b_scale.Data());
    if (const uint8_t* packed = packed_weight(op, b.Data(), scales, N, K, stream)) {
      Scratch scratch(op, quantc::cuda::matmul_fp8_lt_scratch_bytes(M, K), stream);
      const int rc = quantc::cuda::matmul_fp8_lt(a.Data(), packed, out, M, N, K, t_exponent_, scratch.p, stream);
      if (rc != cudaErrorNotSupported) {
        launch(op, [&] { return rc; });
        return;
      }
    }
    Scratch scratch(op, quantc::cuda::matmul_int4_fp8_scratch_bytes(M, K), stream);
    launch(op, [&] {
      return quantc::cuda::matmul_int4_fp8(a.Data(), b.Data(), scales, out, M, N, K, group_, t_exponent_, scratch.p, stream);
    });
  }

  // The weight in float8, packed at the first call for a constant weight (null: no FP8 path here).
  const uint8_t* packed_weight(const std::string& op, const uint8_t* w, const uint8_t* scales, int64_t N, int64_t K, void* stream) {
    if (!constant_weight_ || !quantc::cuda::lt_fp8_available() || K % 16) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    if (packed_ && packed_from_ == w) return packed_;
    if (packed_) cudaFree(packed_);
    packed_ = nullptr;
    if (cudaMalloc(reinterpret_cast<void**>(&packed_), size_t(N * K)) != cudaSuccess) return nullptr;
    packed_from_ = w;
    launch(op, [&] { return quantc::cuda::int4_fp8_pack(w, scales, packed_, N, K, group_, stream); });
    return packed_;
  }

  int64_t group_, t_exponent_;
  bool constant_weight_ = false;
  std::mutex mu_;
  uint8_t* packed_ = nullptr;
  const uint8_t* packed_from_ = nullptr;
};

struct QSelectiveScanCuda {
  QSelectiveScanCuda(const OrtApi* api, const OrtKernelInfo* info) : softplus_(attr_int(api, info, "dt_softplus", 1) != 0) {}
  void Compute(OrtKernelContext* ctx, const Tensor<int8_t>& x, const Tensor<float>& x_scale, const Tensor<int8_t>& dt,
               const Tensor<float>& dt_scale, const Tensor<float>& A, const Tensor<int8_t>& B, const Tensor<float>& B_scale,
               const Tensor<int8_t>& C, const Tensor<float>& C_scale, std::optional<const Tensor<float>*> D,
               std::optional<const Tensor<int8_t>*> z, std::optional<const Tensor<float>*> z_scale, std::optional<const Tensor<float>*> dt_bias,
               std::optional<const Tensor<float>*> h0, std::optional<const Tensor<float>*> y_scale, Tensor<float>& y,
               std::optional<Tensor<float>*> h_out, std::optional<Tensor<int8_t>*> y_q) {
    const std::string op = "QSelectiveScan";
    auto xs = x.Shape(), as = A.Shape(), bs = B.Shape();
    if (xs.size() != 3) fail(op, "x must be [batch, length, dim], got " + shape_str(xs));
    if (dt.Shape() != xs) fail(op, "dt must have x's shape " + shape_str(xs));
    if (as.size() != 2 || as[0] != xs[2]) fail(op, "A must be [dim, state] with dim = " + std::to_string(xs[2]));
    const int64_t Bt = xs[0], L = xs[1], Dm = xs[2], N = as[1];
    if (bs != std::vector<int64_t>{Bt, L, N}) fail(op, "B must be [batch, length, state] = " + shape_str({Bt, L, N}));
    if (C.Shape() != bs) fail(op, "C must be [batch, length, state] = " + shape_str({Bt, L, N}));
    need_scalar(op, "x_scale", x_scale.NumberOfElement());
    need_scalar(op, "dt_scale", dt_scale.NumberOfElement());
    need_scalar(op, "B_scale", B_scale.NumberOfElement());
    need_scalar(op, "C_scale", C_scale.NumberOfElement());
    quantc::cuda::ScanArgsCuda args;
    args.batch = Bt; args.length = L; args.dim = Dm; args.state = N; args.dt_softplus = softplus_;
    args.x = x.Data(); args.dt = dt.Data(); args.A = A.Data(); args.B = B.Data(); args.C = C.Data();
    args.s.x_scale = x_scale.Data(); args.s.dt_scale = dt_scale.Data(); args.s.B_scale = B_scale.Data(); args.s.C_scale = C_scale.Data();
    args.D = opt_data(op, "D", D, Dm);
    args.dt_bias = opt_data(op, "dt_bias", dt_bias, Dm);
    if (z.has_value() && *z) {
      if ((*z)->Shape() != xs) fail(op, "z must have x's shape");
      if (!z_scale.has_value() || !*z_scale) fail(op, "z needs z_scale");
      need_scalar(op, "z_scale", (*z_scale)->NumberOfElement());
      args.z = (*z)->Data();
      args.s.z_scale = (*z_scale)->Data();
    }
    if (h0.has_value() && *h0) {
      if ((*h0)->Shape() != std::vector<int64_t>{Bt, Dm, N}) fail(op, "initial state must be [batch, dim, state] = " + shape_str({Bt, Dm, N}));
      args.h0 = (*h0)->Data();
    }
    if (y_q.has_value() && *y_q) {
      if (!y_scale.has_value() || !*y_scale) fail(op, "the int8 output y_q needs y_scale (input 14)");
      need_scalar(op, "y_scale", (*y_scale)->NumberOfElement());
      args.s.y_scale = (*y_scale)->Data();
      args.y_q = (*y_q)->Allocate(xs);
    }
    args.y = y.Allocate(xs);
    if (h_out.has_value() && *h_out) args.h_out = (*h_out)->Allocate({Bt, Dm, N});
    launch(op, [&] { return quantc::cuda::selective_scan_int8(args, stream_of(ctx)); });
  }
  bool softplus_;
};

struct QCausalConv1dCuda {
  QCausalConv1dCuda(const OrtApi* api, const OrtKernelInfo* info) : silu_(attr_int(api, info, "silu", 1) != 0) {}
  void Compute(OrtKernelContext* ctx, const Tensor<int8_t>& x, const Tensor<float>& x_scale, const Tensor<float>& weight,
               std::optional<const Tensor<float>*> bias, std::optional<const Tensor<float>*> state_in, Tensor<float>& y,
               std::optional<Tensor<float>*> state_out) {
    const std::string op = "QCausalConv1d";
    auto xs = x.Shape(), ws = weight.Shape();
    if (xs.size() != 3) fail(op, "x must be [batch, length, dim], got " + shape_str(xs));
    if (ws.size() != 2 || ws[0] != xs[2] || ws[1] < 1) fail(op, "weight must be [dim, kernel] with dim = " + std::to_string(xs[2]));
    need_scalar(op, "x_scale", x_scale.NumberOfElement());
    quantc::cuda::ConvArgsCuda args;
    args.batch = xs[0]; args.length = xs[1]; args.dim = xs[2]; args.kernel = ws[1]; args.silu = silu_;
    args.x = x.Data(); args.x_scale = x_scale.Data(); args.weight = weight.Data();
    args.bias = opt_data(op, "bias", bias, xs[2]);
    const std::vector<int64_t> ss{xs[0], xs[2], ws[1] - 1};
    if (state_in.has_value() && *state_in) {
      if ((*state_in)->Shape() != ss) fail(op, "state must be [batch, dim, kernel-1] = " + shape_str(ss));
      args.state_in = (*state_in)->Data();
    }
    args.y = y.Allocate(xs);
    if (state_out.has_value() && *state_out) args.state_out = (*state_out)->Allocate(ss);
    launch(op, [&] { return quantc::cuda::causal_conv1d_int8(args, stream_of(ctx)); });
  }
  bool silu_;
};

}  // namespace

namespace quantc_ort {

// Adds the CUDA kernels of the ai.quantc ops (float32 scales and outputs) to `ops`.
void add_cuda_ops(std::vector<std::unique_ptr<Ort::Custom::OrtLiteCustomOp>>& ops) {
  const char* ep = "CUDAExecutionProvider";
  ops.emplace_back(Ort::Custom::CreateLiteCustomOp<HadamardCuda>("Hadamard", ep));
  ops.emplace_back(Ort::Custom::CreateLiteCustomOp<HadamardQuantizeInt8Cuda>("HadamardQuantizeInt8", ep));
  ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt8Cuda>("MatMulInt8", ep));
  ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Int8Cuda<int8_t>>("MatMulInt4Int8", ep));
  ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Int8Cuda<float>>("MatMulInt4Int8", ep));
  ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Int8Cuda<float, true>>("HadamardMatMulInt4Int8", ep));
  ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Int8Cuda<float, false, true>>("SwiGluMatMulInt4Int8", ep));
  ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Fp8Cuda>("MatMulInt4Fp8", ep));
  ops.emplace_back(Ort::Custom::CreateLiteCustomOp<QSelectiveScanCuda>("QSelectiveScan", ep));
  ops.emplace_back(Ort::Custom::CreateLiteCustomOp<QCausalConv1dCuda>("QCausalConv1d", ep));
}

}  // namespace quantc_ort
