// ONNX Runtime registration of the ai.quantc custom-op domain (CPU kernels).
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#include <onnxruntime_lite_custom_op.h>
#undef ORT_API_MANUAL_INIT

#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "quantc/gemm.h"
#include "quantc/hadamard.h"

namespace {

using Ort::Custom::Tensor;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

[[noreturn]] void fail(const std::string& op, const std::string& msg) {
  ORT_CXX_API_THROW("ai.quantc." + op + ": " + msg, ORT_INVALID_ARGUMENT);
}

int64_t attr_int(const OrtApi* api, const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t v = fallback;
  OrtStatus* st = api->KernelInfoGetAttribute_int64(info, name, &v);
  if (st) { api->ReleaseStatus(st); return fallback; }
  return v;
}

// Hadamard(X: float[..., n]) -> Y: Y = X · H_n^T / sqrt(n) along the last axis (normalize=1).
struct HadamardOp {
  HadamardOp(const OrtApi* api, const OrtKernelInfo* info) : normalize_(attr_int(api, info, "normalize", 1) != 0) {}

  void Compute(const Tensor<float>& x, Tensor<float>& y) {
    auto shape = x.Shape();
    if (shape.empty()) fail("Hadamard", "input must have at least one axis");
    int64_t n = shape.back(), p2;
    int m;
    if (!quantc::hadamard_split(n, &p2, &m))
      fail("Hadamard", "last axis " + std::to_string(n) + " of " + shape_str(shape) + " is not 2^k times a supported order");
    float* out = y.Allocate(shape);
    int64_t rows = n == 0 ? 0 : x.NumberOfElement() / n;
    quantc::hadamard_transform(x.Data(), out, rows, n, normalize_);
  }

  bool normalize_;
};

// HadamardQuantizeInt8(X: float[..., n], scale: float scalar) -> Y int8: saturate(round_half_even(H x / sqrt(n) / scale)).
struct HadamardQuantizeInt8Op {
  HadamardQuantizeInt8Op(const OrtApi*, const OrtKernelInfo*) {}

  void Compute(const Tensor<float>& x, const Tensor<float>& scale, Tensor<int8_t>& y) {
    auto shape = x.Shape();
    if (shape.empty()) fail("HadamardQuantizeInt8", "input must have at least one axis");
    if (scale.NumberOfElement() != 1) fail("HadamardQuantizeInt8", "scale must be a scalar");
    int64_t n = shape.back(), p2;
    int m;
    if (!quantc::hadamard_split(n, &p2, &m))
      fail("HadamardQuantizeInt8", "last axis " + std::to_string(n) + " is not 2^k times a supported order");
    const float s = scale.Data()[0];
    int64_t total = x.NumberOfElement();
    std::vector<float> tmp(static_cast<size_t>(total));
    quantc::hadamard_transform(x.Data(), tmp.data(), n == 0 ? 0 : total / n, n, true);
    int8_t* out = y.Allocate(shape);
    for (int64_t i = 0; i < total; ++i) {
      float v = std::nearbyint(tmp[i] / s);  // default rounding mode: half to even
      out[i] = static_cast<int8_t>(v > 127.f ? 127.f : v < -128.f ? -128.f : v);
    }
  }
};

// MatMulInt8(A: int8[..., K], A_scale: float scalar, B: int8[N, K], B_scale: float[N], bias?: float[N]) -> Y float[..., N].
struct MatMulInt8Op {
  MatMulInt8Op(const OrtApi*, const OrtKernelInfo*) {}

  void Compute(const Tensor<int8_t>& a, const Tensor<float>& a_scale, const Tensor<int8_t>& b, const Tensor<float>& b_scale,
               std::optional<const Tensor<float>*> bias, Tensor<float>& y) {
    auto as = a.Shape(), bs = b.Shape();
    if (as.empty()) fail("MatMulInt8", "A must have at least one axis");
    if (bs.size() != 2) fail("MatMulInt8", "B must be 2-D [N, K], got " + shape_str(bs));
    int64_t K = as.back(), N = bs[0];
    if (bs[1] != K) fail("MatMulInt8", "A " + shape_str(as) + " and B " + shape_str(bs) + " disagree on K");
    if (a_scale.NumberOfElement() != 1) fail("MatMulInt8", "A_scale must be a scalar");
    if (b_scale.NumberOfElement() != N) fail("MatMulInt8", "B_scale must have N = " + std::to_string(N) + " elements");
    const float* bias_data = nullptr;
    if (bias.has_value() && *bias) {
      if ((*bias)->NumberOfElement() != N) fail("MatMulInt8", "bias must have N = " + std::to_string(N) + " elements");
      bias_data = (*bias)->Data();
    }
    auto ys = as;
    ys.back() = N;
    float* out = y.Allocate(ys);
    int64_t M = K == 0 ? 0 : a.NumberOfElement() / K;
    quantc::matmul_int8(a.Data(), b.Data(), M, N, K, a_scale.Data()[0], b_scale.Data(), bias_data, out, quantc::best_isa());
  }
};

std::once_flag g_once;
std::unique_ptr<Ort::CustomOpDomain> g_domain;
std::vector<std::unique_ptr<Ort::Custom::OrtLiteCustomOp>> g_ops;

}  // namespace

extern "C" {

// Entry point ONNX Runtime calls (SessionOptions.RegisterCustomOpLibrary).
__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(ORT_API_VERSION));
  try {
    std::call_once(g_once, [] {
      g_domain = std::make_unique<Ort::CustomOpDomain>("ai.quantc");
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<HadamardOp>("Hadamard", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<HadamardQuantizeInt8Op>("HadamardQuantizeInt8", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt8Op>("MatMulInt8", "CPUExecutionProvider"));
      for (auto& op : g_ops) g_domain->Add(op.get());
    });
    Ort::UnownedSessionOptions session_options(options);
    session_options.Add(*g_domain);
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}

// The library's version and the kernel path chosen on this CPU (for reports and benchmarks).
__attribute__((visibility("default"))) const char* QuantcOpsInfo() {
  static std::string info = std::string("quantc_ops 1; isa ") + quantc::isa_name(quantc::best_isa());
  return info.c_str();
}

}  // extern "C"
