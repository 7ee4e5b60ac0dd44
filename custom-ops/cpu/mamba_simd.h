// Internal: the vectorised (AVX2, AVX-512) tiles of selective_scan_int8 and causal_conv1d_int8
// (cpu/mamba_simd.cpp). Both vectorise over channels: the inputs are sequence-major [B, L, D], so
// the channels of one time step are contiguous and a tile of kTile channels is streamed step by
// step (one cache line of each int8 input, four of the float output per step), its state in L1.
#pragma once

#include <cstdint>

#include "quantc/mamba.h"

namespace quantc::detail {

constexpr int64_t kTile = 64;  // channels per tile (8 AVX2 / 4 AVX-512 vectors)

// Floats of scratch one scan tile needs: A transposed to [N][kTile], the state [N][kTile], dt_bias and D.
inline int64_t scan_scratch_floats(int64_t state) { return (2 * state + 2) * kTile; }

// Channels d0 .. d0 + width - 1 (width <= kTile) of batch b, all time steps. Bf and Cf are B and C
// dequantized ([batch, length, state] float, scales applied).
void scan_tile_avx2(const ScanArgs& a, const float* Bf, const float* Cf, int64_t b, int64_t d0, int64_t width, float* scratch);
void scan_tile_avx512(const ScanArgs& a, const float* Bf, const float* Cf, int64_t b, int64_t d0, int64_t width, float* scratch);

// Floats of scratch one conv tile needs: the weight transposed to [K][kTile], the bias, and K - 1 + 1
// rows of dequantized inputs kept as a sliding window.
inline int64_t conv_scratch_floats(int64_t kernel) { return (2 * kernel + 1) * kTile; }

void conv_tile_avx2(const ConvArgs& a, int64_t b, int64_t d0, int64_t width, float* scratch);
void conv_tile_avx512(const ConvArgs& a, int64_t b, int64_t d0, int64_t width, float* scratch);

}  // namespace quantc::detail
