// Internals shared by cpu/attention.cpp (driver, reference path) and cpu/attention_simd.cpp (the AVX2 / AVX-512 tiles).
#pragma once

#include <cstdint>

#include "quantc/attention.h"

namespace quantc::detail {

// Keys per block (a multiple of every path's score tile: 2 AVX2 or 4 AVX-512 vectors of keys).
constexpr int64_t kAttnKeys = 64;

struct AttentionJob {
  const CausalAttentionArgs* a = nullptr;
  int64_t total = 0;          // T = past + seq
  int64_t rows = 0;           // C ≥ T: rows per (batch, KV head) of the present cache (CausalAttentionArgs::present_rows)
  int64_t past_rows = 0;      // rows per (batch, KV head) of the past cache (CausalAttentionArgs::past_rows)
  int64_t padded = 0;         // Tp: T rounded up to kAttnKeys
  int64_t group = 0;          // G = q_heads / kv_heads
  int64_t block = 0;          // query positions per work item
  const float* kt = nullptr;  // [B, kv_heads, D, Tp]: the present keys transposed, zero past T; null: read them as stored
  const float* kbias = nullptr;  // [B, Tp]: 0 for an attended key, -inf for a padding one (and past T); null when no mask
  // The int8 mode (CausalAttentionArgs::int8 in a call with seq > 1), per (batch, KV head) = "head" below:
  bool q8 = false;
  bool codes = false;             // a decode step reading the stored past's codes (CausalAttentionArgs::stored_k) in the tiles
  const float* kscale = nullptr;  // [heads, Tp]: s_k,j · scale (0 past T)
  const float* vscale = nullptr;  // [heads, Tp]: s_v,j (0 past T)
  const int32_t* ksum = nullptr;  // [heads, Tp]: 128 · Σ_d k8 (VNNI: the queries enter vpdpbusd as u8 = q8 + 128)
  const int8_t* k8 = nullptr;     // VNNI: [heads, D/4, Tp, 4] — four dims of a key per dword, a key per dword lane
  const int8_t* v8 = nullptr;     // VNNI: [heads, Tp/4, D, 4] — four keys of a dim per dword, a dim per dword lane
  const float* vq = nullptr;      // AVX2 / reference: [heads, Tp, D] the int8 values as floats (kt then holds k8 as floats)
};

// Floats of scratch one tile needs for `rows` query rows (rounded up to 4) of head size d.
inline int64_t attention_scratch_floats(int64_t rows, int64_t d) {
  const int64_t rp = (rows + 3) / 4 * 4;
  return rp * (2 * d + kAttnKeys + 4) + rp * (d + kAttnKeys) / 4 + 2 * rp;  // + the int8 mode's u8 Q and P, q scale, beta
}

// One work item: query positions [i0, i0 + n) of every query head of KV head `kvh` in batch row b, written to y.
// `scratch` holds attention_scratch_floats(group · n, D) floats. Returns the rows (r = position · G + head in group)
// that saw no key at all: their count, their indices in `empty` (the driver writes zeros there).
int64_t attention_tile_avx2(const AttentionJob& j, int64_t b, int64_t kvh, int64_t i0, int64_t n, float* scratch, int64_t* empty);
int64_t attention_tile_avx512(const AttentionJob& j, int64_t b, int64_t kvh, int64_t i0, int64_t n, float* scratch, int64_t* empty);
// The int8 mode's tiles (j.q8): AVX2 in float on the integer values (kt, vq), AVX-512 VNNI with vpdpbusd (k8, v8).
int64_t attention_tile_q8_avx2(const AttentionJob& j, int64_t b, int64_t kvh, int64_t i0, int64_t n, float* scratch, int64_t* empty);
int64_t attention_tile_q8_vnni(const AttentionJob& j, int64_t b, int64_t kvh, int64_t i0, int64_t n, float* scratch, int64_t* empty);
// The int8 mode's tile with AVX-VNNI (vpdpbusd on ymm) on the Avx2 path: the VNNI layouts k8 / v8, eight lanes; the same
// results as attention_tile_q8_avx2, bit for bit (the same integers, the same float steps on eight lanes).
int64_t attention_tile_q8_avxvnni(const AttentionJob& j, int64_t b, int64_t kvh, int64_t i0, int64_t n, float* scratch, int64_t* empty);
void attention_quantize_kv_avxvnni(const float* k, const float* v, int64_t T, int64_t Tp, int64_t D, float scale, float* kscale,
                                   float* vscale, int32_t* ksum, int8_t* k8, int8_t* v8, int32_t* work);
// The int8 mode's keys and values of one head (T rows of D, D % 16 == 0) into the VNNI layouts k8 / v8 (zero-filled), their
// scales (the keys' times `scale`) and 128 · Σ k8 per row; the same values as the driver's scalar quantize_row. work: 4 · D int32.
// The same for the AVX2 path (D % 8 == 0): kt [D, Tp] and vq [Tp, D] get the integer values as floats. row: 8 · D floats.
void attention_quantize_kv_avx2(const float* k, const float* v, int64_t T, int64_t Tp, int64_t D, float scale, float* kscale,
                                float* vscale, float* kt, float* vq, float* row);
void attention_quantize_kv_vnni(const float* k, const float* v, int64_t T, int64_t Tp, int64_t D, float scale, float* kscale,
                                float* vscale, int32_t* ksum, int8_t* k8, int8_t* v8, int32_t* work);

}  // namespace quantc::detail
