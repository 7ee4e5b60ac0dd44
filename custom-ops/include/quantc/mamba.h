// Kernels of Mamba's quantized selective scan and causal depthwise conv1d (ai.quantc.QSelectiveScan,
// ai.quantc.QCausalConv1d). Activations are int8 with static per-tensor scales; the recurrent state
// stays float32. Layouts are sequence-major: [batch, length, channels].
#pragma once

#include <cstdint>

#include "quantc/gemm.h"  // Isa

namespace quantc {

struct ScanArgs {
  int64_t batch = 0, length = 0, dim = 0, state = 0;
  const int8_t* x = nullptr; float x_scale = 1;     // [B, L, D]
  const int8_t* dt = nullptr; float dt_scale = 1;   // [B, L, D], before softplus
  const float* dt_bias = nullptr;                   // [D] or null
  bool dt_softplus = true;
  const float* A = nullptr;                         // [D, N] (negative; -exp(A_log))
  const int8_t* B = nullptr; float B_scale = 1;     // [B, L, N]
  const int8_t* C = nullptr; float C_scale = 1;     // [B, L, N]
  const float* D = nullptr;                         // [D] or null (skip connection)
  const int8_t* z = nullptr; float z_scale = 1;     // [B, L, D] or null (SiLU gate)
  const float* h0 = nullptr;                        // [B, D, N] or null (initial state)
  float* y = nullptr;                               // [B, L, D]
  float* h_out = nullptr;                           // [B, D, N] or null (final state)
};

// h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * x_t;  y_t = (C_t . h_t + D * x_t) * silu(z_t)
// with dt_t = softplus(dequant(dt_t) + dt_bias). Parallel over batch x channels, sequential in time.
// Isa::Reference is the plain loop (std::exp per state element); Avx2 (needs FMA too) and
// Avx512Vnni (only AVX-512F is used) vectorise over channels with a polynomial exp (cpu/mamba_simd.inc).
void selective_scan_int8(const ScanArgs& args, Isa isa);
void selective_scan_int8(const ScanArgs& args);  // best_isa()

// True unless QUANTC_MAMBA_AVX512=0: the AVX-512 scan/conv tiles are used on AVX-512 CPUs (they were written on an AVX2-only
// machine and opt-in until they had run on one: session 17, a Zen 5 host, tests passing and 2x the AVX2 tiles).
bool mamba_avx512_enabled();

struct ConvArgs {
  int64_t batch = 0, length = 0, dim = 0, kernel = 4;
  const int8_t* x = nullptr; float x_scale = 1;     // [B, L, D]
  const float* weight = nullptr;                    // [D, K]
  const float* bias = nullptr;                      // [D] or null
  const float* state_in = nullptr;                  // [B, D, K-1] or null: the previous K-1 inputs (dequantized)
  bool silu = true;
  float* y = nullptr;                               // [B, L, D]
  float* state_out = nullptr;                       // [B, D, K-1] or null
};

// y[b, t, d] = act(bias[d] + sum_j weight[d, j] * x[b, t - (K-1) + j, d]), inputs before t = 0 from state_in (zeros if null).
// Paths as for the scan.
void causal_conv1d_int8(const ConvArgs& args, Isa isa);
void causal_conv1d_int8(const ConvArgs& args);  // best_isa()

}  // namespace quantc
