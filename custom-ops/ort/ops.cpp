// ONNX Runtime registration of the ai.quantc custom-op domain (CPU kernels).
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#include <onnxruntime_lite_custom_op.h>
#undef ORT_API_MANUAL_INIT

#include "common.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "quantc/attention.h"
#include "quantc/gemm.h"
#include "quantc/gemm_fp8.h"
#include "quantc/hadamard.h"
#include "quantc/mamba.h"
#include "quantc/quantize.h"
#include "quantc/swiglu.h"

namespace {

using Ort::Custom::Tensor;
using quantc_ort::attr_int;
using quantc_ort::fail;
using quantc_ort::shape_str;

// parallel_for's chunks on the session's intra-op thread pool (quantc::ScopedParallelRunner).
struct PoolJob {
  void (*chunk)(void*, int64_t);
  void* job;
};

void pool_chunk(void* p, size_t i) {
  const PoolJob& j = *static_cast<const PoolJob*>(p);
  j.chunk(j.job, static_cast<int64_t>(i));
}

void run_on_ort_pool(void* host, int64_t chunks, void (*chunk)(void*, int64_t), void* job) {
  PoolJob j{chunk, job};
  OrtStatus* st = Ort::GetApi().KernelContext_ParallelFor(static_cast<const OrtKernelContext*>(host), pool_chunk, static_cast<size_t>(chunks), 0, &j);
  if (!st) return;
  Ort::GetApi().ReleaseStatus(st);  // no pool (an older host): run the chunks here
  for (int64_t i = 0; i < chunks; ++i) chunk(job, i);
}

// For the duration of one Compute: the kernels' parallel_for runs on ONNX Runtime's pool.
struct OnOrtPool {
  explicit OnOrtPool(OrtKernelContext* ctx) : scope(run_on_ort_pool, ctx) {}
  quantc::ScopedParallelRunner scope;
};

// Float16 support: scales, bias and outputs may be float16 (the output takes the scales' type, as
// DequantizeLinear's takes its scale's); the kernels compute in float32 and convert at the edges.
using Half = Ort::Float16_t;

template <typename T>
const float* as_float(const Tensor<T>& t, std::vector<float>& store) {
  if constexpr (std::is_same_v<T, float>) {
    return t.Data();
  } else {
    store.resize(static_cast<size_t>(t.NumberOfElement()));
    const T* p = t.Data();
    for (size_t i = 0; i < store.size(); ++i) store[i] = p[i].ToFloat();
    return store.data();
  }
}

// Constant weights are packed when ONNX Runtime creates the kernel (session creation), as its own kernels pre-pack theirs —
// unless the session sets ONNX Runtime's "session.disable_prepacking" to "1", when they are packed at the first Compute
// instead: a session that never runs (quantc's load check of a written model) then holds no packed copy.
bool pack_at_creation(const OrtApi* api, const OrtKernelInfo* info) {
  OrtKeyValuePairs* entries = nullptr;
  if (OrtStatus* st = api->KernelInfo_GetConfigEntries(info, &entries)) {
    api->ReleaseStatus(st);
    return true;
  }
  const char* v = api->GetKeyValue(entries, "session.disable_prepacking");
  const bool disabled = v != nullptr && std::string(v) == "1";
  api->ReleaseKeyValuePairs(entries);
  return !disabled;
}

// Weights packed so far by this process's kernels (QuantcOpsPackedWeights: tests see when packing happens).
std::atomic<int64_t> g_packed_weights{0};

// A constant input's elements as floats (float32 or float16).
template <typename T>
std::vector<float> constant_floats(const Ort::ConstValue& v) {
  const size_t n = v.GetTensorTypeAndShapeInfo().GetElementCount();
  const T* p = v.GetTensorData<T>();
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, float>) out[i] = p[i];
    else out[i] = p[i].ToFloat();
  }
  return out;
}

template <typename T>
float scalar(const std::string& op, const char* what, const Tensor<T>& t) {
  if (t.NumberOfElement() != 1) fail(op, std::string(what) + " must be a scalar");
  if constexpr (std::is_same_v<T, float>) return t.Data()[0];
  else return t.Data()[0].ToFloat();
}

// A float32 view of an output of type T: the output itself for float, a staging buffer converted on finish() for float16.
template <typename T>
struct FloatOut {
  FloatOut(Tensor<T>& t, const std::vector<int64_t>& shape) : out(t.Allocate(shape)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    count = n;
    if constexpr (std::is_same_v<T, float>) data = out;
    else { stage.resize(static_cast<size_t>(n)); data = stage.data(); }
  }
  void finish() {
    if constexpr (!std::is_same_v<T, float>)
      for (int64_t i = 0; i < count; ++i) out[i] = Half(stage[static_cast<size_t>(i)]);
  }
  T* out;
  float* data;
  int64_t count;
  std::vector<float> stage;
};

// Hadamard(X: float[..., n]) -> Y: Y = X · H_n^T / sqrt(n) along the last axis (normalize=1).
struct HadamardOp {
  HadamardOp(const OrtApi* api, const OrtKernelInfo* info) : normalize_(attr_int(api, info, "normalize", 1) != 0) {}

  void Compute(OrtKernelContext* ctx, const Tensor<float>& x, Tensor<float>& y) {
    OnOrtPool pool(ctx);
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

  void Compute(OrtKernelContext* ctx, const Tensor<float>& x, const Tensor<float>& scale, Tensor<int8_t>& y) {
    OnOrtPool pool(ctx);
    auto shape = x.Shape();
    if (shape.empty()) fail("HadamardQuantizeInt8", "input must have at least one axis");
    if (scale.NumberOfElement() != 1) fail("HadamardQuantizeInt8", "scale must be a scalar");
    int64_t n = shape.back(), p2;
    int m;
    if (!quantc::hadamard_split(n, &p2, &m))
      fail("HadamardQuantizeInt8", "last axis " + std::to_string(n) + " is not 2^k times a supported order");
    int8_t* out = y.Allocate(shape);
    quantc::hadamard_quantize_int8(x.Data(), out, n == 0 ? 0 : x.NumberOfElement() / n, n, scale.Data()[0]);
  }
};

// MatMulInt8(A: TA[..., K], A_scale: T scalar, B: int8[N, K], B_scale: T[N], bias?: T[N]) -> Y T[..., N], T = float or float16.
// TA is int8, or float32 with T float32: A is then quantized inside with A_scale (static per tensor, as QuantizeLinear(A,
// A_scale, 0): saturate(round_half_even(A / A_scale))) and the int8 GEMM runs on the result.
template <typename TA, typename T>
struct MatMulInt8Op {
  // A constant weight (an initializer) is packed once for the VNNI or the AVX2 GEMM: when the session creates the kernel, or
  // at the first Compute where the session disables pre-packing (pack_at_creation).
  MatMulInt8Op(const OrtApi* api, const OrtKernelInfo* info) {
    if (quantc::best_isa() == quantc::Isa::Reference) return;
    Ort::ConstKernelInfo ki(info);
    int is_constant = 0;
    Ort::ConstValue b = ki.GetTensorConstantInput(2, &is_constant);
    if (!is_constant) return;
    const auto shape = b.GetTensorTypeAndShapeInfo().GetShape();
    if (shape.size() != 2) return;  // Compute reports the shape error
    pack_ok_ = true;
    if (pack_at_creation(api, info)) {
      pack(b.GetTensorData<int8_t>(), shape[0], shape[1]);
      packed_at_creation_ = true;
    }
  }

  bool pack_ok_ = false;
  bool packed_at_creation_ = false;  // packed_ / packed_avx2_ set before any Compute
  std::once_flag packing_;
  std::unique_ptr<quantc::PackedB> packed_;
  std::unique_ptr<quantc::PackedBAvx2> packed_avx2_;

  void pack(const int8_t* b, int64_t N, int64_t K) {
    if (quantc::best_isa() == quantc::Isa::Avx512Vnni)
      packed_ = std::make_unique<quantc::PackedB>(quantc::pack_b_vnni(b, N, K));
    else
      packed_avx2_ = std::make_unique<quantc::PackedBAvx2>(quantc::pack_b_avx2(b, N, K));
    ++g_packed_weights;
  }

  void Compute(OrtKernelContext* ctx, const Tensor<TA>& a, const Tensor<T>& a_scale, const Tensor<int8_t>& b, const Tensor<T>& b_scale,
               std::optional<const Tensor<T>*> bias, Tensor<T>& y) {
    OnOrtPool pool(ctx);
    auto as = a.Shape(), bs = b.Shape();
    if (as.empty()) fail("MatMulInt8", "A must have at least one axis");
    if (bs.size() != 2) fail("MatMulInt8", "B must be 2-D [N, K], got " + shape_str(bs));
    int64_t K = as.back(), N = bs[0];
    if (bs[1] != K) fail("MatMulInt8", "A " + shape_str(as) + " and B " + shape_str(bs) + " disagree on K");
    const float sa = scalar("MatMulInt8", "A_scale", a_scale);
    if (b_scale.NumberOfElement() != N) fail("MatMulInt8", "B_scale must have N = " + std::to_string(N) + " elements");
    std::vector<float> bs_store, bias_store;
    const float* sb = as_float(b_scale, bs_store);
    const float* bias_data = nullptr;
    if (bias.has_value() && *bias) {
      if ((*bias)->NumberOfElement() != N) fail("MatMulInt8", "bias must have N = " + std::to_string(N) + " elements");
      bias_data = as_float(**bias, bias_store);
    }
    auto ys = as;
    ys.back() = N;
    FloatOut<T> out(y, ys);
    int64_t M = K == 0 ? 0 : a.NumberOfElement() / K;
    const int8_t* a8 = nullptr;
    if constexpr (std::is_same_v<TA, float>) {
      static thread_local std::vector<int8_t> q;  // this thread's quantized A, reused from call to call
      q.resize(static_cast<size_t>(a.NumberOfElement()));
      quantc::quantize_int8_parallel(a.Data(), a.NumberOfElement(), sa, q.data());
      a8 = q.data();
    } else {
      a8 = a.Data();
    }
    if (pack_ok_ && !packed_at_creation_) std::call_once(packing_, [&] { pack(b.Data(), N, K); });
    if (packed_ && packed_->N == N && packed_->K == K)
      quantc::matmul_int8_vnni_packed(a8, *packed_, M, sa, sb, bias_data, out.data);
    else if (packed_avx2_ && packed_avx2_->N == N && packed_avx2_->K == K && M > 1)  // one row (decode): the unpacked dot products are faster
      quantc::matmul_int8_avx2_packed(a8, *packed_avx2_, M, sa, sb, bias_data, out.data);
    else
      quantc::matmul_int8(a8, b.Data(), M, N, K, sa, sb, bias_data, out.data, quantc::best_isa());
    out.finish();
  }
};

// MatMulInt4Int8(A: TA[..., K], A_scale: T scalar, B: uint8[N, K/2] (int4, chunked), B_scale: T[N, K/group_size], bias?: T[N])
// -> Y T[..., N].
// TA is int8 (quantized by the graph), or float32 with T float32: A is then quantized per token inside (s = max|row| / 127)
// and each output row multiplied by its s before the bias (see README).
// ROTATE: the op HadamardMatMulInt4Int8 (float32 A only), the same with each row of A first transformed as ai.quantc.Hadamard
// does (H_K x, divided by sqrt(K) when normalize=1, the default). It is a separate op type, not an attribute, so that a
// library that does not know it refuses the model when ONNX Runtime creates the session (ORT passes unknown attributes of a
// custom op through unchecked: an older library would compute MatMulInt4Int8 without the transform). MatMulInt4Int8's own
// hadamard / hadamard_normalize attributes are still read, for models compiled while the fold was an attribute.
// SWIGLU: the op SwiGluMatMulInt4Int8 (float32 A and T), a fused gate/up projection followed by its SwiGLU: B [2F, K/2] holds the
// gate's and the up projection's rows (attribute gate: 0 when the gate's are the first F, 1 when they are the last F), and
// Y [..., F] = silu(A·W_gate) * (A·W_up) with silu(g) = g / (1 + e^-g) — the Split, Sigmoid and two Muls of the graph inside.
template <typename TA, typename T, bool ROTATE = false, bool SWIGLU = false>
struct MatMulInt4Int8Op {
  static_assert(!ROTATE || std::is_same_v<TA, float>, "the Hadamard comes before the quantization: float32 A only");
  static_assert(!SWIGLU || (std::is_same_v<TA, float> && std::is_same_v<T, float> && !ROTATE), "SwiGluMatMulInt4Int8: float32 only");
  static constexpr const char* kName = ROTATE ? "HadamardMatMulInt4Int8" : SWIGLU ? "SwiGluMatMulInt4Int8" : "MatMulInt4Int8";

  static quantc::RowHadamard read_hadamard(const OrtApi* api, const OrtKernelInfo* info) {
    const bool on = ROTATE || attr_int(api, info, "hadamard", 0) != 0;
    if (!on) return quantc::RowHadamard::None;
    const int64_t normalize = ROTATE ? attr_int(api, info, "normalize", 1) : attr_int(api, info, "hadamard_normalize", 1);
    return normalize != 0 ? quantc::RowHadamard::Normalized : quantc::RowHadamard::Unnormalized;
  }

  // A constant weight with constant scales (initializers) is repacked once for the register-blocked GEMM: when the session
  // creates the kernel, or at the first Compute where the session disables pre-packing (pack_at_creation).
  MatMulInt4Int8Op(const OrtApi* api, const OrtKernelInfo* info)
      : group_(attr_int(api, info, "group_size", 32)), hadamard_(read_hadamard(api, info)),
        gate_(SWIGLU ? attr_int(api, info, "gate", 0) : 0) {
    if (SWIGLU && gate_ != 0 && gate_ != 1) fail(kName, "gate must be 0 or 1, got " + std::to_string(gate_));
    if (quantc::best_isa() == quantc::Isa::Reference) return;
    Ort::ConstKernelInfo ki(info);
    int b_constant = 0, s_constant = 0;
    Ort::ConstValue b = ki.GetTensorConstantInput(2, &b_constant);
    if (!b_constant) return;
    Ort::ConstValue s = ki.GetTensorConstantInput(3, &s_constant);
    if (!s_constant) return;
    auto bs = b.GetTensorTypeAndShapeInfo().GetShape();
    if (bs.size() != 2) return;  // Compute reports the shape errors
    const int64_t N = bs[0], K = bs[1] * 2;
    if (K % 64 || (group_ != 32 && group_ != 64 && group_ != 128) || K % group_) return;
    if (static_cast<int64_t>(s.GetTensorTypeAndShapeInfo().GetElementCount()) != N * (K / group_)) return;
    pack_ok_ = true;
    if (pack_at_creation(api, info)) {
      const std::vector<float> sb = constant_floats<T>(s);
      pack(b.GetTensorData<uint8_t>(), sb.data(), N, K);
      packed_at_creation_ = true;
    }
  }

  void pack(const uint8_t* b, const float* sb, int64_t N, int64_t K) {
    packed_ = std::make_unique<quantc::PackedInt4>(quantc::pack_int4_gemm(b, sb, N, K, group_));
    ++g_packed_weights;
  }

  void Compute(OrtKernelContext* ctx, const Tensor<TA>& a, const Tensor<T>& a_scale, const Tensor<uint8_t>& b, const Tensor<T>& b_scale,
               std::optional<const Tensor<T>*> bias, Tensor<T>& y) {
    OnOrtPool pool(ctx);
    const std::string op = kName;
    auto as = a.Shape(), bs = b.Shape();
    if (as.empty()) fail(op, "A must have at least one axis");
    if (bs.size() != 2) fail(op, "B must be 2-D [N, K/2], got " + shape_str(bs));
    int64_t K = as.back(), N = bs[0];
    if (bs[1] * 2 != K) fail(op, "A " + shape_str(as) + " and B " + shape_str(bs) + " disagree on K (B holds two int4 per byte)");
    if (K % 64) fail(op, "K = " + std::to_string(K) + " must be a multiple of 64");
    if (group_ != 32 && group_ != 64 && group_ != 128) fail(op, "group_size must be 32, 64 or 128");
    if (K % group_) fail(op, "K must be a multiple of group_size");
    if (b_scale.NumberOfElement() != N * (K / group_)) fail(op, "B_scale must be [N, K/group_size] = [" + std::to_string(N) + "," + std::to_string(K / group_) + "]");
    if (hadamard_ != quantc::RowHadamard::None) {
      if (!std::is_same_v<TA, float>) fail(op, "hadamard=1 needs a float32 A (the transform comes before the quantization)");
      int64_t pow2;
      int order;
      if (!quantc::hadamard_split(K, &pow2, &order))
        fail(op, "the Hadamard transform: K = " + std::to_string(K) + " is not 2^k times a supported order");
    }
    std::vector<float> bs_store, bias_store;
    const float* sb = as_float(b_scale, bs_store);
    const float* bias_data = nullptr;
    if (bias.has_value() && *bias) {
      if ((*bias)->NumberOfElement() != N) fail(op, "bias must have N elements");
      bias_data = as_float(**bias, bias_store);
    }
    if (SWIGLU && N % 2) fail(op, "B must hold an even number of rows (the gate's and the up projection's), got " + shape_str(bs));
    auto ys = as;
    ys.back() = SWIGLU ? N / 2 : N;
    FloatOut<T> out(y, ys);
    const int64_t M = a.NumberOfElement() / K;
    const float sa = scalar(op, "A_scale", a_scale);
    // SwiGLU: the [M, 2F] product goes to scratch from the session's allocator (its arena), then the SwiGLU into Y.
    // The allocator is declared first: the allocation returns its memory to it when it goes.
    float* dst = out.data;
    std::optional<Ort::Allocator> alloc;
    std::optional<Ort::MemoryAllocation> wide;
    if constexpr (SWIGLU) {
      const Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
      alloc.emplace(Ort::KernelContext(ctx).GetAllocator(*cpu));
      wide.emplace(alloc->GetAllocation(static_cast<size_t>(std::max<int64_t>(M * N, 1)) * sizeof(float)));
      dst = static_cast<float*>(wide->get());
    }
    if (pack_ok_ && !packed_at_creation_) std::call_once(packing_, [&] { pack(b.Data(), sb, N, K); });
    const bool packed = packed_ && packed_->N == N && packed_->K == K;
    if constexpr (std::is_same_v<TA, float>) {
      if (packed) quantc::matmul_int4_f32_packed(a.Data(), *packed_, M, sa, bias_data, dst, quantc::best_isa(), hadamard_);
      else unpacked_float(a.Data(), b.Data(), M, N, K, sa, sb, bias_data, dst);
      if constexpr (SWIGLU) quantc::swiglu(dst, M, N / 2, static_cast<int>(gate_), out.data, quantc::best_isa());
    } else if (packed) {
      quantc::matmul_int4_int8_packed(a.Data(), *packed_, M, sa, bias_data, out.data, quantc::best_isa());
    } else {
      quantc::matmul_int4_int8(a.Data(), b.Data(), M, N, K, group_, sa, sb, bias_data, out.data, quantc::best_isa());
    }
    out.finish();
  }

  // Float A with a weight that is not a constant (or a CPU without AVX2): the rows quantized, the unpacked kernel, the
  // rows scaled — the same arithmetic as matmul_int4_f32_packed.
  void unpacked_float(const float* x, const uint8_t* w, int64_t M, int64_t N, int64_t K, float sa, const float* sb, const float* bias,
                      float* y) const {
    const quantc::Isa isa = quantc::best_isa();
    std::vector<int8_t> q(static_cast<size_t>(M * K));
    std::vector<float> s(static_cast<size_t>(M)), rotated;
    if (hadamard_ != quantc::RowHadamard::None) {
      rotated.resize(static_cast<size_t>(M * K));
      quantc::hadamard_transform(x, rotated.data(), M, K, hadamard_ == quantc::RowHadamard::Normalized);
      x = rotated.data();
    }
    quantc::quantize_rows_int8(x, M, K, q.data(), s.data(), isa);
    quantc::matmul_int4_int8(q.data(), w, M, N, K, group_, sa, sb, nullptr, y, isa);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        const float v = y[m * N + n] * s[static_cast<size_t>(m)];
        y[m * N + n] = bias ? v + bias[n] : v;
      }
  }

  int64_t group_;
  quantc::RowHadamard hadamard_;
  int64_t gate_;  // SwiGLU: which half of B's rows is the gate's
  bool pack_ok_ = false;  // B and B_scale are constants of a shape the packed GEMM takes
  bool packed_at_creation_ = false;  // packed_ set before any Compute
  std::once_flag packing_;
  std::unique_ptr<quantc::PackedInt4> packed_;
};

// MatMulInt4Fp8(A: float[..., K], B: uint8[N, ceil(K/2)] (int4 pairs), B_scale: float8e4m3fn[N, K/group_size]) -> Y float[..., N]
// (FireQ: A quantized to float8 per token inside, B dequantized to float8, output divided by 2^t_exponent; see README).
struct MatMulInt4Fp8Op {
  MatMulInt4Fp8Op(const OrtApi* api, const OrtKernelInfo* info)
      : group_(attr_int(api, info, "group_size", 128)), t_exponent_(attr_int(api, info, "t_exponent", 0)) {}

  void Compute(OrtKernelContext* ctx, const Tensor<float>& a, const Tensor<uint8_t>& b, const Tensor<Ort::Float8E4M3FN_t>& b_scale,
               Tensor<float>& y) {
    OnOrtPool pool(ctx);
    const std::string op = "MatMulInt4Fp8";
    auto as = a.Shape(), bs = b.Shape();
    if (as.empty()) fail(op, "A must have at least one axis");
    if (bs.size() != 2) fail(op, "B must be 2-D [N, ceil(K/2)], got " + shape_str(bs));
    int64_t K = as.back(), N = bs[0];
    if (bs[1] != (K + 1) / 2) fail(op, "A " + shape_str(as) + " and B " + shape_str(bs) + " disagree on K (B holds two int4 per byte)");
    if (group_ <= 0 || K % group_) fail(op, "K = " + std::to_string(K) + " must be a multiple of group_size = " + std::to_string(group_));
    if (b_scale.NumberOfElement() != N * (K / group_))
      fail(op, "B_scale must be [N, K/group_size] = [" + std::to_string(N) + "," + std::to_string(K / group_) + "]");
    auto ys = as;
    ys.back() = N;
    float* out = y.Allocate(ys);
    try {
      quantc::matmul_int4_fp8(a.Data(), b.Data(), reinterpret_cast<const uint8_t*>(b_scale.Data()), a.NumberOfElement() / K, N, K, group_,
                              t_exponent_, out);
    } catch (const std::invalid_argument& e) {
      fail(op, e.what());
    }
  }

  int64_t group_, t_exponent_;
};

// QSelectiveScan: Mamba's selective scan on int8 inputs with fp32 state (see README for the schema). T, the type of
// the scales and of y, is float or float16; y_q (optional output 2) is y quantized to int8 with y_scale (input 14).
template <typename T>
struct QSelectiveScanOp {
  QSelectiveScanOp(const OrtApi* api, const OrtKernelInfo* info) : softplus_(attr_int(api, info, "dt_softplus", 1) != 0) {}

  void Compute(OrtKernelContext* ctx, const Tensor<int8_t>& x, const Tensor<T>& x_scale, const Tensor<int8_t>& dt, const Tensor<T>& dt_scale,
               const Tensor<float>& A, const Tensor<int8_t>& B, const Tensor<T>& B_scale, const Tensor<int8_t>& C,
               const Tensor<T>& C_scale, std::optional<const Tensor<float>*> D, std::optional<const Tensor<int8_t>*> z,
               std::optional<const Tensor<T>*> z_scale, std::optional<const Tensor<float>*> dt_bias,
               std::optional<const Tensor<float>*> h0, std::optional<const Tensor<T>*> y_scale, Tensor<T>& y, std::optional<Tensor<float>*> h_out,
               std::optional<Tensor<int8_t>*> y_q) {
    OnOrtPool pool(ctx);
    const std::string op = "QSelectiveScan";
    auto xs = x.Shape(), as = A.Shape(), bs = B.Shape();
    if (xs.size() != 3) fail(op, "x must be [batch, length, dim], got " + shape_str(xs));
    if (dt.Shape() != xs) fail(op, "dt must have x's shape " + shape_str(xs));
    if (as.size() != 2 || as[0] != xs[2]) fail(op, "A must be [dim, state] with dim = " + std::to_string(xs[2]));
    const int64_t Bt = xs[0], L = xs[1], Dm = xs[2], N = as[1];
    if (bs != std::vector<int64_t>{Bt, L, N}) fail(op, "B must be [batch, length, state] = " + shape_str({Bt, L, N}));
    if (C.Shape() != bs) fail(op, "C must be [batch, length, state] = " + shape_str({Bt, L, N}));
    quantc::ScanArgs args;
    args.batch = Bt; args.length = L; args.dim = Dm; args.state = N;
    args.x = x.Data(); args.x_scale = scalar(op, "x_scale", x_scale);
    args.dt = dt.Data(); args.dt_scale = scalar(op, "dt_scale", dt_scale); args.dt_softplus = softplus_;
    args.A = A.Data(); args.B = B.Data(); args.B_scale = scalar(op, "B_scale", B_scale);
    args.C = C.Data(); args.C_scale = scalar(op, "C_scale", C_scale);
    if (D.has_value() && *D) {
      if ((*D)->NumberOfElement() != Dm) fail(op, "D must have dim elements");
      args.D = (*D)->Data();
    }
    if (z.has_value() && *z) {
      if ((*z)->Shape() != xs) fail(op, "z must have x's shape");
      if (!z_scale.has_value() || !*z_scale) fail(op, "z needs z_scale");
      args.z = (*z)->Data();
      args.z_scale = scalar(op, "z_scale", **z_scale);
    }
    if (dt_bias.has_value() && *dt_bias) {
      if ((*dt_bias)->NumberOfElement() != Dm) fail(op, "dt_bias must have dim elements");
      args.dt_bias = (*dt_bias)->Data();
    }
    if (h0.has_value() && *h0) {
      if ((*h0)->Shape() != std::vector<int64_t>{Bt, Dm, N}) fail(op, "initial state must be [batch, dim, state] = " + shape_str({Bt, Dm, N}));
      args.h0 = (*h0)->Data();
    }
    const bool want_q = y_q.has_value() && *y_q;
    float ys = 0;
    if (want_q) {
      if (!y_scale.has_value() || !*y_scale) fail(op, "the int8 output y_q needs y_scale (input 14)");
      ys = scalar(op, "y_scale", **y_scale);
      if (!(ys > 0) || !std::isfinite(ys)) fail(op, "y_scale must be positive and finite");
    }
    FloatOut<T> out(y, xs);
    args.y = out.data;
    if (h_out.has_value() && *h_out) args.h_out = (*h_out)->Allocate({Bt, Dm, N});
    quantc::selective_scan_int8(args);
    if (want_q) quantc::quantize_int8(out.data, out.count, ys, (*y_q)->Allocate(xs), quantc::best_isa());
    out.finish();
  }

  bool softplus_;
};

// QCausalConv1d: depthwise causal conv1d on int8 input, fp32 weights, fused SiLU, conv state in/out.
struct QCausalConv1dOp {
  QCausalConv1dOp(const OrtApi* api, const OrtKernelInfo* info) : silu_(attr_int(api, info, "silu", 1) != 0) {}

  void Compute(OrtKernelContext* ctx, const Tensor<int8_t>& x, const Tensor<float>& x_scale, const Tensor<float>& weight, std::optional<const Tensor<float>*> bias,
               std::optional<const Tensor<float>*> state_in, Tensor<float>& y, std::optional<Tensor<float>*> state_out) {
    OnOrtPool pool(ctx);
    const std::string op = "QCausalConv1d";
    auto xs = x.Shape(), ws = weight.Shape();
    if (xs.size() != 3) fail(op, "x must be [batch, length, dim], got " + shape_str(xs));
    if (ws.size() != 2 || ws[0] != xs[2] || ws[1] < 1) fail(op, "weight must be [dim, kernel] with dim = " + std::to_string(xs[2]));
    quantc::ConvArgs args;
    args.batch = xs[0]; args.length = xs[1]; args.dim = xs[2]; args.kernel = ws[1];
    args.x = x.Data(); args.x_scale = scalar(op, "x_scale", x_scale); args.weight = weight.Data(); args.silu = silu_;
    if (bias.has_value() && *bias) {
      if ((*bias)->NumberOfElement() != xs[2]) fail(op, "bias must have dim elements");
      args.bias = (*bias)->Data();
    }
    const std::vector<int64_t> ss{xs[0], xs[2], ws[1] - 1};
    if (state_in.has_value() && *state_in) {
      if ((*state_in)->Shape() != ss) fail(op, "state must be [batch, dim, kernel-1] = " + shape_str(ss));
      args.state_in = (*state_in)->Data();
    }
    args.y = y.Allocate(xs);
    if (state_out.has_value() && *state_out) args.state_out = (*state_out)->Allocate(ss);
    quantc::causal_conv1d_int8(args);
  }

  bool silu_;
};

// CausalAttention(Q, K, V, attention_mask?: int64[B, T], past_key?, past_value?, cos_cache?, sin_cache?, position_ids?)
//   -> Y, present_key?, present_value?: ONNX Attention (opset 23) on the causal + padding mask, computing only the lower
// triangle (quantc/attention.h). Q/K/V are [B, H, S, D] (4-D) or [B, S, H·D] (3-D, with q_num_heads / kv_num_heads); the
// cache is [B, kv heads, T, D]. lower_attention's fused form:
// - packed_qkv = 1: Q is [B, S, (q heads + 2 · kv heads) · D] holding the queries, keys and values side by side (what a
//   fused QKV projection gives), and the K and V inputs name that same tensor;
// - cos_cache / sin_cache [positions, rotary dim / 2] with position_ids int64 [B, S]: the new queries and keys go through
//   ONNX RotaryEmbedding first (attributes rotary_interleaved, rotary_embedding_dim: 0 = the head size);
// - qk_hadamard = 1: then through ai.quantc.Hadamard (normalised) per head — QuaRot's R3; present_key holds the keys as
//   transformed, as the unfused graph's present output did.
// A cache stored as integers (C = int8_t: kv_cache_bit_width 8; C = uint8_t: 4, two values per byte, the first in the low
// nibble, each stored as q + 8 — ONNX Runtime GroupQueryAttention's layout): past/present [B, kv heads, T, D or D / 2] hold
// q = clamp(rint(x / s), −2^(bits−1), 2^(bits−1) − 1) with the attributes k_cache_scale / v_cache_scale (one value, or one
// per KV head and channel). The op reads the stored past as floats, rounds the new keys (after RoPE / R3) and values to the
// grid before attending (quantc/attention.h, grid_bits), and stores them; past rows are copied as bytes (or left in place in
// a shared buffer).
template <typename C>
struct CausalAttentionOp {
  static constexpr bool kStored = !std::is_same_v<C, float>;
  static constexpr int kBits = std::is_same_v<C, int8_t> ? 8 : std::is_same_v<C, uint8_t> ? 4 : 0;

  static std::vector<float> floats(const OrtApi* api, const OrtKernelInfo* info, const char* name) {
    size_t n = 0;
    OrtStatus* st = api->KernelInfoGetAttributeArray_float(info, name, nullptr, &n);
    if (st) { api->ReleaseStatus(st); return {}; }
    std::vector<float> v(n);
    st = api->KernelInfoGetAttributeArray_float(info, name, v.data(), &n);
    if (st) { api->ReleaseStatus(st); return {}; }
    return v;
  }

  CausalAttentionOp(const OrtApi* api, const OrtKernelInfo* info)
      : q_heads_(attr_int(api, info, "q_num_heads", 0)), kv_heads_(attr_int(api, info, "kv_num_heads", 0)),
        packed_(attr_int(api, info, "packed_qkv", 0) != 0), interleaved_(attr_int(api, info, "rotary_interleaved", 0) != 0),
        rotary_dim_(attr_int(api, info, "rotary_embedding_dim", 0)), hadamard_(attr_int(api, info, "qk_hadamard", 0) != 0),
        int8_(attr_int(api, info, "int8", 0) != 0), bits_(attr_int(api, info, "kv_cache_bit_width", 0)),
        k_grid_(floats(api, info, "k_cache_scale")), v_grid_(floats(api, info, "v_cache_scale")) {
    float s = 0;
    OrtStatus* st = api->KernelInfoGetAttribute_float(info, "scale", &s);
    if (st) api->ReleaseStatus(st);
    else scale_ = s;
  }

  void Compute(OrtKernelContext* ctx, const Tensor<float>& q, const Tensor<float>& k, const Tensor<float>& v,
               std::optional<const Tensor<int64_t>*> mask, std::optional<const Tensor<C>*> past_k,
               std::optional<const Tensor<C>*> past_v, std::optional<const Tensor<float>*> cos,
               std::optional<const Tensor<float>*> sin, std::optional<const Tensor<int64_t>*> position_ids, Tensor<float>& y,
               std::optional<Tensor<C>*> present_k, std::optional<Tensor<C>*> present_v) {
    OnOrtPool pool(ctx);
    const std::string op = "CausalAttention";
    if (bits_ != kBits)
      fail(op, "kv_cache_bit_width " + std::to_string(bits_) + " does not match the cache's element type (float32: 0, int8: 8, "
               "uint8: 4)");
    auto qs = q.Shape(), ks = k.Shape(), vs = v.Shape();
    quantc::CausalAttentionArgs a;
    std::vector<int64_t> y_shape = qs;
    if (packed_) {
      if (q_heads_ <= 0 || kv_heads_ <= 0) fail(op, "packed_qkv needs the q_num_heads and kv_num_heads attributes");
      if (qs.size() != 3 || qs[2] % (q_heads_ + 2 * kv_heads_) != 0)
        fail(op, "packed_qkv: Q must be [batch, sequence, (q_num_heads + 2 x kv_num_heads) x head size], got " + shape_str(qs));
      if (k.Data() != q.Data() || v.Data() != q.Data() || ks != qs || vs != qs)
        fail(op, "packed_qkv: the K and V inputs must name the packed Q input itself");
      a.batch = qs[0]; a.seq = qs[1]; a.q_heads = q_heads_; a.kv_heads = kv_heads_;
      a.head_size = qs[2] / (q_heads_ + 2 * kv_heads_);
      y_shape = {a.batch, a.seq, a.q_heads * a.head_size};
    } else if (qs.size() != ks.size() || qs.size() != vs.size() || (qs.size() != 3 && qs.size() != 4)) {
      fail(op, "Q, K and V must all be [batch, heads, sequence, head size] or all [batch, sequence, heads·head size], got " +
               shape_str(qs) + ", " + shape_str(ks) + ", " + shape_str(vs));
    } else if (qs.size() == 4) {
      a.batch = qs[0]; a.q_heads = qs[1]; a.seq = qs[2]; a.head_size = qs[3]; a.kv_heads = ks[1];
      if (ks != std::vector<int64_t>{a.batch, a.kv_heads, a.seq, a.head_size} || vs != ks)
        fail(op, "K and V must be [batch, kv heads, sequence, head size] beside Q " + shape_str(qs) + ", got " + shape_str(ks) + ", " +
                     shape_str(vs));
    } else {
      if (q_heads_ <= 0 || kv_heads_ <= 0) fail(op, "3-D inputs need the q_num_heads and kv_num_heads attributes");
      a.batch = qs[0]; a.q_heads = q_heads_; a.kv_heads = kv_heads_; a.seq = qs[1];
      if (qs[2] % q_heads_ != 0) fail(op, "Q's last axis " + std::to_string(qs[2]) + " is not q_num_heads x head size");
      a.head_size = qs[2] / q_heads_;
      if (ks != std::vector<int64_t>{a.batch, a.seq, a.kv_heads * a.head_size} || vs != ks)
        fail(op, "K and V must be [batch, sequence, kv_num_heads x head size] beside Q " + shape_str(qs) + ", got " + shape_str(ks) +
                     ", " + shape_str(vs));
    }
    if (a.q_heads % a.kv_heads != 0)
      fail(op, std::to_string(a.q_heads) + " query heads do not group over " + std::to_string(a.kv_heads) + " KV heads");
    const bool has_past = past_k.has_value() && *past_k;
    if (has_past != (past_v.has_value() && *past_v)) fail(op, "past_key and past_value go together");
    const int64_t width = kBits == 4 ? a.head_size / 2 : a.head_size;  // the stored cache's last axis
    if (kBits == 4 && a.head_size % 2 != 0) fail(op, "a 4-bit cache needs an even head size, got " + std::to_string(a.head_size));
    if constexpr (kStored) {
      const size_t n = static_cast<size_t>(a.kv_heads * a.head_size);
      if ((k_grid_.size() != 1 && k_grid_.size() != n) || v_grid_.size() != k_grid_.size())
        fail(op, "k_cache_scale and v_cache_scale must both hold 1 or kv heads x head size = " + std::to_string(n) + " values");
      for (float g : k_grid_) if (!(g > 0) || !std::isfinite(g)) fail(op, "k_cache_scale must be positive and finite");
      for (float g : v_grid_) if (!(g > 0) || !std::isfinite(g)) fail(op, "v_cache_scale must be positive and finite");
    }
    if (has_past) {
      auto ps = (*past_k)->Shape();
      if (ps.size() != 4 || ps[0] != a.batch || ps[1] != a.kv_heads || ps[3] != width || (*past_v)->Shape() != ps)
        fail(op, "past_key and past_value must be [batch, kv heads, past, " + std::string(kBits == 4 ? "head size / 2" : "head size") +
                     "], got " + shape_str(ps) + ", " + shape_str((*past_v)->Shape()));
      a.past = ps[2];
      if constexpr (!kStored) { a.past_k = (*past_k)->Data(); a.past_v = (*past_v)->Data(); }
    }
    int64_t T = a.past + a.seq;
    if (mask.has_value() && *mask) {
      const auto ms = (*mask)->Shape();
      if (ms.size() == 2 && ms[0] == a.batch && ms[1] != T && has_past && ms[1] >= a.seq && ms[1] <= a.past) {
        // A cache of fixed capacity (ONNX Runtime GenAI's past_present_share_buffer): past_key holds C = its rows per head, of
        // which the first total − sequence are valid; present_key has the same C rows (GenAI binds it to the same buffer).
        a.past_rows = a.past;
        a.present_rows = a.past;
        a.past = ms[1] - a.seq;
        T = ms[1];
      } else if (ms != std::vector<int64_t>{a.batch, T}) {
        fail(op, "attention_mask must be [batch, past + sequence] = " + shape_str({a.batch, T}) + " (or, with a fixed-capacity "
                 "past of C rows, [batch, total] with sequence <= total <= C), got " + shape_str(ms));
      }
      a.key_mask = (*mask)->Data();
    }
    if (scale_ < 0 || std::isnan(scale_)) fail(op, "scale must be positive");
    a.scale = scale_ != 0 ? scale_ : 1.0f / std::sqrt(static_cast<float>(a.head_size));
    const bool four = qs.size() == 4;
    auto strides = [&](int64_t heads) {
      if (packed_) {
        const int64_t w = (a.q_heads + 2 * a.kv_heads) * a.head_size;
        return quantc::HeadStrides{a.seq * w, a.head_size, w};
      }
      return four ? quantc::HeadStrides{heads * a.seq * a.head_size, a.seq * a.head_size, a.head_size}
                  : quantc::HeadStrides{a.seq * heads * a.head_size, a.head_size, heads * a.head_size};
    };
    a.q = q.Data(); a.q_strides = strides(a.q_heads);
    a.k = k.Data() + (packed_ ? a.q_heads * a.head_size : 0); a.k_strides = strides(a.kv_heads);
    a.v = v.Data() + (packed_ ? (a.q_heads + a.kv_heads) * a.head_size : 0); a.v_strides = strides(a.kv_heads);
    const bool rope = cos.has_value() && *cos;
    if (rope) {
      if (!(sin.has_value() && *sin) || !(position_ids.has_value() && *position_ids))
        fail(op, "cos_cache needs sin_cache and position_ids beside it");
      const int64_t rd = rotary_dim_ != 0 ? rotary_dim_ : a.head_size;
      auto cs = (*cos)->Shape();
      if (rd <= 0 || rd % 2 != 0 || rd > a.head_size)
        fail(op, "rotary_embedding_dim " + std::to_string(rd) + " must be even and at most the head size " + std::to_string(a.head_size));
      if (cs.size() != 2 || cs[1] != rd / 2 || (*sin)->Shape() != cs)
        fail(op, "cos_cache and sin_cache must be [positions, rotary dim / 2 = " + std::to_string(rd / 2) + "], got " + shape_str(cs) +
                     ", " + shape_str((*sin)->Shape()));
      if ((*position_ids)->Shape() != std::vector<int64_t>{a.batch, a.seq})
        fail(op, "position_ids must be [batch, sequence] = " + shape_str({a.batch, a.seq}) + ", got " + shape_str((*position_ids)->Shape()));
      a.rope_cos = (*cos)->Data(); a.rope_sin = (*sin)->Data(); a.rope_positions = cs[0]; a.rotary_dim = rd;
      a.rope_interleaved = interleaved_; a.position_ids = (*position_ids)->Data();
      for (int64_t e = 0; e < a.batch * a.seq; ++e)
        if (a.position_ids[e] < 0 || a.position_ids[e] >= cs[0])
          fail(op, "position id " + std::to_string(a.position_ids[e]) + " is outside the " + std::to_string(cs[0]) + " rows of cos_cache");
    } else if ((sin.has_value() && *sin) || (position_ids.has_value() && *position_ids)) {
      fail(op, "sin_cache and position_ids go with cos_cache");
    }
    a.qk_hadamard = hadamard_;
    a.int8 = int8_;
    if (hadamard_) {
      int64_t p2;
      int m;
      if (!quantc::hadamard_split(a.head_size, &p2, &m)) fail(op, "qk_hadamard: no Hadamard matrix of order " + std::to_string(a.head_size));
    }
    a.y = y.Allocate(y_shape);
    a.y_strides = packed_ ? quantc::HeadStrides{a.seq * a.q_heads * a.head_size, a.head_size, a.q_heads * a.head_size} : strides(a.q_heads);
    const int64_t rows = a.present_rows > 0 ? a.present_rows : T;
    if constexpr (kStored) {
      stored(a, T, rows, width, past_k, past_v, present_k, present_v);
    } else {
      const std::vector<int64_t> cs{a.batch, a.kv_heads, rows, a.head_size};
      thread_local std::vector<float> spare_k, spare_v;
      auto cache = [&](std::optional<Tensor<float>*>& out, std::vector<float>& spare) {
        if (out.has_value() && *out) return (*out)->Allocate(cs);
        spare.resize(static_cast<size_t>(a.batch * a.kv_heads * rows * a.head_size));
        return spare.data();
      };
      a.present_k = cache(present_k, spare_k);
      a.present_v = cache(present_v, spare_v);
      quantc::causal_attention(a, quantc::best_isa());
    }
  }

  // The stored cache: the kernel reads the stored past itself (its codes inside a decode step's tiles; else it first writes
  // their products) and runs on the plain interface with the new rows rounded to the grid in a float buffer; then the
  // present is written as codes — past rows as bytes (none where the present output is the past's buffer), the new rows
  // from the grid values, the rows after T of a fixed-capacity cache cleared to code 0.
  void stored(quantc::CausalAttentionArgs& a, int64_t T, int64_t rows, int64_t width, std::optional<const Tensor<C>*>& past_k,
              std::optional<const Tensor<C>*>& past_v, std::optional<Tensor<C>*>& present_k, std::optional<Tensor<C>*>& present_v) {
    const int64_t D = a.head_size, P = a.past, heads = a.batch * a.kv_heads;
    const int64_t stored_rows = a.past_rows > 0 ? a.past_rows : P;
    const bool per_channel = k_grid_.size() > 1;
    auto scale = [&](const std::vector<float>& g, int64_t h, int64_t d) { return per_channel ? g[h * D + d] : g[0]; };
    // One float buffer per K / V of T rows per head, the kernel in its in-place mode (past and present the same buffer):
    // it writes the new rows (and, where it does not read the codes in its tiles, the past's products).
    thread_local std::vector<float> nk, nv;
    nk.resize(static_cast<size_t>(heads * T * D)); nv.resize(nk.size());
    thread_local std::vector<float> k_scales, v_scales;
    k_scales.resize(static_cast<size_t>(a.kv_heads * D)); v_scales.resize(k_scales.size());
    for (int64_t i = 0; i < a.kv_heads * D; ++i) {
      k_scales[static_cast<size_t>(i)] = scale(k_grid_, i / D, i % D);
      v_scales[static_cast<size_t>(i)] = scale(v_grid_, i / D, i % D);
    }
    static const int8_t none = 0;
    a.stored_k = P > 0 ? reinterpret_cast<const int8_t*>((*past_k)->Data()) : &none;
    a.stored_v = P > 0 ? reinterpret_cast<const int8_t*>((*past_v)->Data()) : &none;
    a.stored_rows = stored_rows;
    a.stored_bits = static_cast<int>(kBits);
    a.stored_k_scale = k_scales.data(); a.stored_v_scale = v_scales.data();
    a.past_k = nk.data(); a.past_v = nv.data();
    a.present_k = nk.data(); a.present_v = nv.data();
    a.past_rows = T; a.present_rows = T;
    a.k_grid = k_grid_.data(); a.v_grid = v_grid_.data();
    a.grid_scales = static_cast<int64_t>(k_grid_.size()); a.grid_bits = kBits;
    quantc::causal_attention(a, quantc::best_isa());
    const std::vector<int64_t> cs{a.batch, a.kv_heads, rows, width};
    for (int which = 0; which < 2; ++which) {
      auto& out = which == 0 ? present_k : present_v;
      if (!(out.has_value() && *out)) continue;
      C* dst = (*out)->Allocate(cs);
      const C* past = P > 0 || stored_rows > 0 ? (which == 0 ? (*past_k)->Data() : (*past_v)->Data()) : nullptr;
      const bool in_place = dst == past && stored_rows == rows;
      const float* fresh = which == 0 ? nk.data() : nv.data();
      const auto& g = which == 0 ? k_grid_ : v_grid_;
      const int lo = -(1 << (kBits - 1)), hi = (1 << (kBits - 1)) - 1;
      for (int64_t item = 0; item < heads; ++item) {
        C* head = dst + item * rows * width;
        if (!in_place && P > 0) std::memcpy(head, past + item * stored_rows * width, static_cast<size_t>(P * width) * sizeof(C));
        for (int64_t t = P; t < T; ++t) {
          C* row = head + t * width;
          for (int64_t d = 0; d < D; ++d) {
            const int qv = std::min(hi, std::max(lo, static_cast<int>(std::nearbyint(fresh[(item * T + t) * D + d] /
                                                                                     scale(g, item % a.kv_heads, d)))));
            if constexpr (kBits == 8) row[d] = static_cast<C>(qv);
            else if ((d & 1) == 0) row[d >> 1] = static_cast<C>(qv + 8);
            else row[d >> 1] = static_cast<C>(row[d >> 1] | ((qv + 8) << 4));
          }
        }
        if (!in_place && rows > T)
          std::fill(head + T * width, head + rows * width, static_cast<C>(kBits == 4 ? 0x88 : 0));
      }
    }
  }

  int64_t q_heads_, kv_heads_;
  bool packed_, interleaved_;
  int64_t rotary_dim_;
  bool hadamard_, int8_;
  int64_t bits_;
  std::vector<float> k_grid_, v_grid_;
  float scale_ = 0;
};

}  // namespace

#ifdef QUANTC_WITH_CUDA
namespace quantc_ort {
// ort/ops_cuda.cc: the same ops' CUDA kernels, for the CUDA execution provider.
void add_cuda_ops(std::vector<std::unique_ptr<Ort::Custom::OrtLiteCustomOp>>& ops);
}  // namespace quantc_ort
#endif

namespace {

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
      // float32 and float16 kernels of the same op (told apart by the scales' type)
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt8Op<int8_t, float>>("MatMulInt8", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt8Op<int8_t, Half>>("MatMulInt8", "CPUExecutionProvider"));
      // float A, quantized with the static A_scale inside the op
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt8Op<float, float>>("MatMulInt8", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Int8Op<int8_t, float>>("MatMulInt4Int8", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Int8Op<int8_t, Half>>("MatMulInt4Int8", "CPUExecutionProvider"));
      // float A, quantized per token inside the op
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Int8Op<float, float>>("MatMulInt4Int8", "CPUExecutionProvider"));
      // float A, each row Hadamard-transformed and then quantized per token inside the op (QuaRot's R4 folded)
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Int8Op<float, float, true>>("HadamardMatMulInt4Int8", "CPUExecutionProvider"));
      // float A, a fused gate/up projection with its SwiGLU
      g_ops.emplace_back(
          Ort::Custom::CreateLiteCustomOp<MatMulInt4Int8Op<float, float, false, true>>("SwiGluMatMulInt4Int8", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<MatMulInt4Fp8Op>("MatMulInt4Fp8", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<QSelectiveScanOp<float>>("QSelectiveScan", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<QSelectiveScanOp<Half>>("QSelectiveScan", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<QCausalConv1dOp>("QCausalConv1d", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<CausalAttentionOp<float>>("CausalAttention", "CPUExecutionProvider"));
      // the cache stored as int8 / as uint8 with two 4-bit values per byte (kv_cache_bit_width 8 / 4)
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<CausalAttentionOp<int8_t>>("CausalAttention", "CPUExecutionProvider"));
      g_ops.emplace_back(Ort::Custom::CreateLiteCustomOp<CausalAttentionOp<uint8_t>>("CausalAttention", "CPUExecutionProvider"));
#ifdef QUANTC_WITH_CUDA
      quantc_ort::add_cuda_ops(g_ops);
#endif
      for (auto& op : g_ops) g_domain->Add(op.get());
    });
    Ort::UnownedSessionOptions session_options(options);
    session_options.Add(*g_domain);
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}

// How many constant weights this process's kernels have packed so far (at kernel creation, or at a first Compute where the
// session disables pre-packing): lets a test see when packing happens.
__attribute__((visibility("default"))) int64_t QuantcOpsPackedWeights() { return g_packed_weights.load(); }

// The library's version and the kernel path chosen on this CPU (for reports and benchmarks).
__attribute__((visibility("default"))) const char* QuantcOpsInfo() {
#ifdef QUANTC_WITH_CUDA
  static std::string info = std::string("quantc_ops 1; isa ") + quantc::isa_name(quantc::best_isa()) + "; cuda kernels";
#else
  static std::string info = std::string("quantc_ops 1; isa ") + quantc::isa_name(quantc::best_isa());
#endif
  return info.c_str();
}

}  // extern "C"
