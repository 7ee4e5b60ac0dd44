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
  // A cache of fixed capacity (ONNX Runtime GenAI's past_present_share_buffer): past_k/past_v hold past_rows rows per
  // (batch, KV head), of which the first `past` are valid, and present_k/present_v hold present_rows rows, the first past + S
  // written. Where present_k is past_k (the same buffer, as GenAI binds it) the past rows are not copied — only the new
  // rows are written, at past .. past + S − 1; otherwise the past rows are copied and the rows after past + S zeroed.
  // 0 = exactly past (past_rows) and past + S (present_rows): the plain ONNX past/present interface.
  int64_t past_rows = 0, present_rows = 0;
  float* y = nullptr; HeadStrides y_strides;          // [B, q_heads, S, D] viewed through its strides
  // Optional transforms of the new queries and keys, applied before the scores and before the keys enter the present
  // cache (lower_attention's fused form of the RotaryEmbedding and QuaRot R3 Hadamard nodes in front of the op):
  // - rotary embedding as ONNX RotaryEmbedding (opset 23) computes it, when rope_cos is given: the first rotary_dim
  //   (even, ≤ head_size) of each head rotated by the rows cos/sin [rope_positions, rotary_dim / 2] at position_ids[b, i]
  //   — the two halves of those dims paired, or neighbouring pairs when rope_interleaved; the rest passes through;
  // - then, with qk_hadamard, x ← H_D · x / √D per head (quantc/hadamard.h's matrix, as ai.quantc.Hadamard).
  const float* rope_cos = nullptr;
  const float* rope_sin = nullptr;
  int64_t rope_positions = 0, rotary_dim = 0;
  bool rope_interleaved = false;
  const int64_t* position_ids = nullptr;              // [B, S], each in [0, rope_positions)
  bool qk_hadamard = false;
  // int8 = true: in calls with more than one new position (prefill, chunked prefill), Q·Kᵀ and P·V in int8 (SageAttention's
  // idea, without its K smoothing), the softmax in float:
  // - each query row (after the transforms) and each key row j: symmetric int8 with scale absmax / 127, rint(x · 127 / absmax);
  //   scores = (Σ_d q8 · k8) · s_q · s_k,j · scale, exactly (the integer sums fit float's 24 bits);
  // - each value row j: int8 with s_v,j = absmax / 127; the softmax numerators p_j (float, exp(score − running max)) are
  //   weighted p'_j = p_j · s_v,j and, per query row and key block (kAttnKeys keys), quantized to u8 against their max m':
  //   u_j = rint(p'_j · 255 / m'); the block adds (m' / 255) · Σ_j u_j · v8_j to the row's output; the denominator sums the
  //   float p_j. Every scale is per row, so a position never depends on a later key.
  // A call with one new position (a decode step) reads the float cache as without int8: quantizing the whole cache per
  // step would cost as much as the float dot products. The present cache is float either way.
  // AVX-512 VNNI runs the integer sums with vpdpbusd; AVX2 and the reference compute the same integers in float (exact).
  bool int8 = false;
  // A cache stored as integers (ai.quantc.CausalAttention's kv_cache_bit_width, the caller keeps the stored bytes): with
  // grid_bits = 8 or 4 the new keys (after the transforms) and values are rounded to the symmetric grid
  // x ← clamp(rint(x / s), −2^(bits−1), 2^(bits−1) − 1) · s in the present cache before any of them is read — s = k_grid[0] /
  // v_grid[0] when grid_scales is 1, else k_grid[h · head_size + d] per KV head and channel (grid_scales = kv_heads ·
  // head_size) — so that this call attends to exactly what the stored cache gives back in later calls.
  const float* k_grid = nullptr;
  const float* v_grid = nullptr;
  int64_t grid_scales = 0;
  int grid_bits = 0;
  // A stored past kept where it is (ai.quantc.CausalAttention's 8- and 4-bit caches): with stored_k / stored_v, row j < past
  // of (batch b, KV head h) has the codes q[d] = stored_k[((b · kv_heads + h) · stored_rows + j) · head_size + d] (stored_bits
  // 8: int8), or, with stored_bits 4, two per byte of a row of head_size / 2 bytes — byte e of the row, read as uint8, holds
  // q[2e] + 8 in its low nibble and q[2e + 1] + 8 in its high one (ONNX Runtime GroupQueryAttention's int4 layout); the value
  // is q[d] · stored_k_scale[h · head_size + d] (kv_heads · head_size scales), and past_k / past_v are not read. A decode step
  // on the SIMD paths reads these codes inside its tiles; elsewhere (more than one new position, the reference path) the
  // driver first writes the same products into present_k's first rows — the same floats either way, so the paths agree bit
  // for bit.
  const int8_t* stored_k = nullptr;
  const int8_t* stored_v = nullptr;
  int64_t stored_rows = 0;
  int stored_bits = 8;
  const float* stored_k_scale = nullptr;
  const float* stored_v_scale = nullptr;
};

// y[b, h, i] = Σ_j p_j · V[b, h / (q_heads / kv_heads), j] with p = softmax_j(scale · q_i · k_j) over the keys j that
// query i (absolute position past + i) may see: j ≤ past + i and key_mask[b, j] ≠ 0. A query that may see no key at all
// (a padded position under left padding) gets zeros: what ONNX Runtime's CPU Attention (1.32) gives on the exporters'
// additive mask Where(allowed, 0, float32 lowest). (The decomposed Softmax would give the mean of all values there; such
// positions are padding, which no real query reads.)
// Isa::Reference is a plain loop per query row; Avx2 (with FMA) and Avx512Vnni (its AVX-512F part) run the tiles.
// Parallel over (batch, kv head, block of query rows) with quantc::parallel_for. With the optional transforms, the queries
// are transformed into a scratch copy and the keys in the present cache; the inputs are never written.
// Throws std::invalid_argument on inconsistent sizes, a missing cache, a bad rotary_dim, a position outside the tables or a
// head size without a Hadamard matrix.
void causal_attention(const CausalAttentionArgs& args, Isa isa);

}  // namespace quantc
