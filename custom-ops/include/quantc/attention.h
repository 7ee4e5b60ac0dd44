// Causal attention of ai.quantc.CausalAttention: softmax(Q·Kᵀ · scale + causal/padding mask) · V over the lower triangle
// only (plus the past cache), blocked flash-style (online softmax over tiles of query rows × key columns), grouped-query
// heads (kv_heads divides q_heads), float32 throughout.
#pragma once

#include <cstdint>

#include "quantc/gemm.h"  // Isa

namespace quantc {

// Strides (in floats) of a [batch, heads, sequence, head_size] view with head_size contiguous: the 4-D layout
// [B, H, S, D] is {H·S·D, S·D, D}, the 3-D one [B, S, H·D] is {S·H·D, D, H·D}.
struct HeadStrides {
  int64_t batch = 0, head = 0, seq = 0;
};

struct CausalAttentionArgs {
  int64_t batch = 0, q_heads = 0, kv_heads = 0, seq = 0, past = 0, head_size = 0;
  float scale = 1;
  const float* q = nullptr; HeadStrides q_strides;    // [B, q_heads, S, D] viewed through its strides
  const float* k = nullptr; HeadStrides k_strides;    // the new keys, [B, kv_heads, S, D]
  const float* v = nullptr; HeadStrides v_strides;    // the new values
  const float* past_k = nullptr;                      // [B, kv_heads, past, D] contiguous, or null when past = 0
  const float* past_v = nullptr;
  const int64_t* key_mask = nullptr;                  // [B, past + S]: 0 = padding (never attended), else attended; or null
  float* present_k = nullptr;                         // [B, kv_heads, past + S, D]: written (the past then the new keys)
  float* present_v = nullptr;
  float* y = nullptr; HeadStrides y_strides;          // [B, q_heads, S, D] viewed through its strides
};

// y[b, h, i] = Σ_j p_j · V[b, h / (q_heads / kv_heads), j] with p = softmax_j(scale · q_i · k_j) over the keys j that
// query i (absolute position past + i) may see: j ≤ past + i and key_mask[b, j] ≠ 0. A query that may see no key at all
// (a padded position under left padding) gets zeros: what ONNX Runtime's CPU Attention (1.32) gives on the exporters'
// additive mask Where(allowed, 0, float32 lowest). (The decomposed Softmax would give the mean of all values there; such
// positions are padding, which no real query reads.)
// Isa::Reference is a plain loop per query row; Avx2 (with FMA) and Avx512Vnni (its AVX-512F part) run the tiles.
// Parallel over (batch, kv head, block of query rows) with quantc::parallel_for.
void causal_attention(const CausalAttentionArgs& args, Isa isa);

}  // namespace quantc
