// CUDA kernels of the ai.quantc ops (custom-ops/cuda/*.cu), registered for ONNX Runtime's CUDA execution provider
// (ort/ops_cuda.cc) and measured by custom-ops/bench/cuda. Built only when CMake finds nvcc (QUANTC_CUDA).
//
// Conventions: every pointer is a device pointer, scalars that are tensors in the graph (a_scale, x_scale, ...) too, so
// a launch never waits for the host; `stream` is a cudaStream_t (nullptr: the legacy default stream). Each function
// checks its arguments (std::invalid_argument with a one-line message, as the CPU kernels), enqueues its kernels and
// returns the cudaError_t of the launches as an int (0 = cudaSuccess); nothing synchronizes. Scratch buffers are
// the caller's (the *_scratch_bytes functions say how many bytes, 256-byte aligned pointers expected).
// The arithmetic is the CPU kernels' (include/quantc/*.h): the integer sums are exact, and where the CPU reference
// folds floats in a fixed order the CUDA kernels fold them in the same order with the same roundings (no FMA
// contraction), so MatMulInt8 and MatMulInt4Int8 equal the CPU reference bit for bit; the float kernels (scan,
// conv, Hadamard, INT4 x FP8) are compared by relative norm.
#pragma once
#include <cstddef>
#include <cstdint>

namespace quantc::cuda {

// Compute capability of the current device (major * 10 + minor), 0 when no device is usable.
int device_sm();

// Stream-ordered scratch from quantc's own memory pool of the current device (it keeps freed memory for the next call);
// cudaMallocAsync's semantics: usable by work enqueued on `stream` after the call, freed after the work before scratch_free.
int scratch_alloc(void** p, size_t bytes, void* stream);
int scratch_free(void* p, void* stream);

// --- MatMulInt8 (quantc/gemm.h matmul_int8): y[m][n] = float(sum_k a[m][k] * b[n][k]) * (a_scale * b_scale[n]) + bias[n].
// a int8 [M, K], b int8 [N, K], b_scale float [N], bias float [N] or null, a_scale one float, y float [M, N]. K % 16 == 0.
int matmul_int8(const int8_t* a, const float* a_scale, const int8_t* b, const float* b_scale, const float* bias, float* y, int64_t M,
                int64_t N, int64_t K, void* stream);

// --- MatMulInt4Int8 (quantc/gemm.h matmul_int4_int8): w int4 in 64-k chunks (uint8 [N, K/2]), w_scale float [N, K/G],
// acc = sum over groups g in order of float(int32 group sum) * (a_scale * w_scale[n][g]); y = acc + bias[n].
// K % 64 == 0, G in {32, 64, 128}. M <= 8 runs the memory-bound GEMV, larger M the tensor-core GEMM.
int matmul_int4_int8(const int8_t* a, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, float* y,
                     int64_t M, int64_t N, int64_t K, int64_t group_size, void* stream);
// The same with a float A quantized per token inside (quantc/gemm.h matmul_int4_f32_packed): s[m] = max(max|x[m]|, 1e-12) / 127,
// q = saturate(round_half_even(x / s[m])), y[m][n] = matmul_int4_int8(q) without bias * s[m] + bias[n].
size_t matmul_int4_f32_scratch_bytes(int64_t M, int64_t K);
int matmul_int4_f32(const float* x, const float* a_scale, const uint8_t* w, const float* w_scale, const float* bias, float* y, int64_t M,
                    int64_t N, int64_t K, int64_t group_size, void* scratch, void* stream);

// --- MatMulInt4Fp8 (quantc/gemm_fp8.h matmul_int4_fp8): x float [M, K] quantized to float8 e4m3fn per row
// (s_m = max(max|x[m]|, 1e-12) / 448), w int4 pairs (uint8 [N, ceil(K/2)], low nibble k = 2j), w_scale float8 e4m3fn bytes
// [N, K/G]; b = fp8(q * scale); y = (sum_k a * b) * s_m * 2^-t_exponent, accumulated in float32 on the tensor cores.
size_t matmul_int4_fp8_scratch_bytes(int64_t M, int64_t K);
int matmul_int4_fp8(const float* x, const uint8_t* w, const uint8_t* w_scale, float* y, int64_t M, int64_t N, int64_t K, int64_t group_size,
                    int64_t t_exponent, void* scratch, void* stream);

// --- QSelectiveScan and QCausalConv1d (quantc/mamba.h): the same argument structs, with device pointers, and the
// per-tensor scales as device floats (x_scale_d ... each one float; null where the CPU struct's pointer is null).
struct ScanScales {
  const float* x_scale = nullptr;
  const float* dt_scale = nullptr;
  const float* B_scale = nullptr;
  const float* C_scale = nullptr;
  const float* z_scale = nullptr;  // with z
  const float* y_scale = nullptr;  // with y_q
};
struct ScanArgsCuda {
  int64_t batch = 0, length = 0, dim = 0, state = 0;
  bool dt_softplus = true;
  const int8_t* x = nullptr;
  const int8_t* dt = nullptr;
  const float* dt_bias = nullptr;
  const float* A = nullptr;
  const int8_t* B = nullptr;
  const int8_t* C = nullptr;
  const float* D = nullptr;
  const int8_t* z = nullptr;
  const float* h0 = nullptr;
  float* y = nullptr;
  float* h_out = nullptr;
  int8_t* y_q = nullptr;  // y quantized with y_scale (round half to even, saturate), or null
  ScanScales s;
  int lanes = 0;  // lanes per channel: 0 (the default, 8), 8 or 4 (each lane holds state / lanes states); the harness times both
};
int selective_scan_int8(const ScanArgsCuda& args, void* stream);
// The same scan on float inputs (x, dt, B, C, z float; no scales, no y_q): what an unquantized model runs, the
// harness's peer for QSelectiveScan. The same kernel code, instantiated for float loads.
struct ScanArgsF32 {
  int64_t batch = 0, length = 0, dim = 0, state = 0;
  bool dt_softplus = true;
  const float *x = nullptr, *dt = nullptr, *dt_bias = nullptr, *A = nullptr, *B = nullptr, *C = nullptr, *D = nullptr;
  const float *z = nullptr, *h0 = nullptr;
  float *y = nullptr, *h_out = nullptr;
  int lanes = 0;  // as ScanArgsCuda's
};
int selective_scan_f32(const ScanArgsF32& args, void* stream);
// The scan kernels hold up to this many states per channel (in registers); more throws std::invalid_argument.
constexpr int64_t kScanMaxState = 64;

struct ConvArgsCuda {
  int64_t batch = 0, length = 0, dim = 0, kernel = 4;
  bool silu = true;
  const int8_t* x = nullptr;
  const float* x_scale = nullptr;  // one float
  const float* weight = nullptr;   // [D, K]
  const float* bias = nullptr;     // [D] or null
  const float* state_in = nullptr; // [B, D, K-1] or null
  float* y = nullptr;              // [B, L, D]
  float* state_out = nullptr;      // [B, D, K-1] or null
};
int causal_conv1d_int8(const ConvArgsCuda& args, void* stream);

// --- SwiGLU (quantc/swiglu.h swiglu), SwiGluMatMulInt4Int8's last step: y [rows, F] = silu(g) * u per element of the
// product x [rows, 2F], g its gate half (gate 0: the first F of each row, 1: the last F), u the other; expf, so equal to the
// CPU kernel to float rounding.
int swiglu(const float* x, float* y, int64_t rows, int64_t F, int gate, void* stream);

// --- Hadamard (quantc/hadamard.h hadamard_transform): y = H_n x (/ sqrt(n)) per row of n floats; n = 2^k * m with the CPU
// op's orders. x and y may alias. HadamardQuantizeInt8: the same followed by saturate(round_half_even(v / scale)).
int hadamard(const float* x, float* y, int64_t rows, int64_t n, bool normalize, void* stream);
int hadamard_quantize_int8(const float* x, const float* scale, int8_t* y, int64_t rows, int64_t n, void* stream);

}  // namespace quantc::cuda
