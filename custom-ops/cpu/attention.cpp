// ai.quantc.CausalAttention's driver: the present cache, the transposed keys and the padding bias (one pass per
// (batch, KV head)), then the work items (batch, KV head, block of query positions) on quantc::parallel_for, each a tile of
// cpu/attention_simd.inc or, on Isa::Reference, a plain loop per query row.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_impl.h"
#include "quantc/hadamard.h"

namespace quantc {
namespace {

using detail::AttentionJob;
using detail::kAttnKeys;

struct Driver {
  AttentionJob job;
  Isa isa = Isa::Reference;
  bool avx_vnni = false;  // the Avx2 path's int8 mode on AVX-VNNI (the byte layouts, vpdpbusd on ymm)
  int64_t blocks = 0;     // query blocks per (batch, KV head)
};

bool transforms(const CausalAttentionArgs& a) { return a.rope_cos != nullptr || a.qk_hadamard; }

// The rotary embedding of one new query or key head x (D floats) of batch row b at new position i, in place, as ONNX
// RotaryEmbedding computes it: x1·cos − x2·sin, x2·cos + x1·sin over the paired dims.
void rope_head(const CausalAttentionArgs& a, float* x, int64_t b, int64_t i) {
  {
    const int64_t half = a.rotary_dim / 2, pos = a.position_ids[b * a.seq + i];
    const float* c = a.rope_cos + pos * half;
    const float* s = a.rope_sin + pos * half;
    const int64_t step = a.rope_interleaved ? 2 : 1, other = a.rope_interleaved ? 1 : half;
    for (int64_t j = 0; j < half; ++j) {
      float* p = x + j * step;
      const float x1 = p[0], x2 = p[other];
      p[0] = x1 * c[j] - x2 * s[j];
      p[other] = x2 * c[j] + x1 * s[j];
    }
  }
}

// `rows` contiguous heads, each rotated at (b, i0 + r · step) when RoPE is on, then all through the normalised Hadamard.
void transform_heads(const CausalAttentionArgs& a, float* x, int64_t rows, int64_t b, int64_t i0, int64_t step, Isa isa) {
  if (a.rope_cos)
    for (int64_t r = 0; r < rows; ++r) rope_head(a, x + r * a.head_size, b, i0 + r * step);
  if (a.qk_hadamard) hadamard_transform_rows(x, x, rows, a.head_size, true, isa);
}

struct QueryPrep {
  const CausalAttentionArgs* a;
  float* out;  // [B, S, q_heads, D]
  Isa isa;
};

// The transformed queries, one (batch row, position) per item, into a [B, S, q_heads, D] copy.
void prep_queries(void* p, int64_t begin, int64_t end) {
  const QueryPrep& qp = *static_cast<const QueryPrep*>(p);
  const CausalAttentionArgs& a = *qp.a;
  const int64_t D = a.head_size;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / a.seq, i = item % a.seq;
    float* x = qp.out + item * a.q_heads * D;
    for (int64_t h = 0; h < a.q_heads; ++h) {
      std::memcpy(x + h * D, a.q + b * a.q_strides.batch + h * a.q_strides.head + i * a.q_strides.seq, static_cast<size_t>(D) * sizeof(float));
      if (a.rope_cos) rope_head(a, x + h * D, b, i);
    }
  }
  // One Hadamard call for the whole range: its rows are contiguous in the copy.
  float* rows = qp.out + begin * a.q_heads * D;
  if (a.qk_hadamard) hadamard_transform_rows(rows, rows, (end - begin) * a.q_heads, D, true, qp.isa);
}

// Symmetric int8 of one row of D floats: scale absmax / 127 into *scale, the values rint(x · 127 / absmax) into q.
void quantize_row(const float* x, int64_t D, float* scale, int8_t* q) {
  float amax = 0;
  for (int64_t d = 0; d < D; ++d) amax = std::max(amax, std::fabs(x[d]));
  *scale = amax / 127.0f;
  const float inv = amax > 0 ? 127.0f / amax : 0.0f;
  // Round half to even by the 1.5 · 2^23 trick (exact for |t| ≤ 127; vectorises, unlike nearbyint's call).
  constexpr float kRound = 12582912.0f;
  for (int64_t d = 0; d < D; ++d) {
    const float t = std::min(std::max(x[d] * inv, -127.0f), 127.0f);
    q[d] = static_cast<int8_t>((t + kRound) - kRound);
  }
}

// The int8 mode's keys and values of one (batch, KV head) from its present cache: scales, the VNNI byte layouts (vectorised,
// cpu/attention_simd.inc) or the float copies of the integer values (the buffers are zero past T).
void quantize_head(const Driver& dr, int64_t item) {
  const CausalAttentionArgs& a = *dr.job.a;
  const AttentionJob& j = dr.job;
  const int64_t D = a.head_size, T = j.total, Tp = j.padded;
  float* kscale = const_cast<float*>(j.kscale) + item * Tp;
  float* vscale = const_cast<float*>(j.vscale) + item * Tp;
  if (dr.isa == Isa::Avx512Vnni || dr.avx_vnni) {
    thread_local std::vector<int32_t> work;
    work.resize(static_cast<size_t>(4 * D));
    auto* quantize = dr.avx_vnni ? detail::attention_quantize_kv_avxvnni : detail::attention_quantize_kv_vnni;
    quantize(a.present_k + item * j.rows * D, a.present_v + item * j.rows * D, T, Tp, D, a.scale, kscale, vscale,
             const_cast<int32_t*>(j.ksum) + item * Tp, const_cast<int8_t*>(j.k8) + item * D * Tp,
             const_cast<int8_t*>(j.v8) + item * Tp * D, work.data());
    return;
  }
  if (dr.isa == Isa::Avx2) {
    thread_local std::vector<float> row;
    row.resize(static_cast<size_t>(8 * D));
    detail::attention_quantize_kv_avx2(a.present_k + item * j.rows * D, a.present_v + item * j.rows * D, T, Tp, D, a.scale, kscale, vscale,
                                       const_cast<float*>(j.kt) + item * D * Tp, const_cast<float*>(j.vq) + item * Tp * D, row.data());
    return;
  }
  std::vector<int8_t> row(static_cast<size_t>(D));
  for (int64_t t = 0; t < T; ++t) {
    quantize_row(a.present_k + (item * j.rows + t) * D, D, &kscale[t], row.data());
    kscale[t] *= a.scale;  // (amax / 127) · scale, as the VNNI path computes it
    int32_t sum = 0;
    for (int64_t d = 0; d < D; ++d) {
      sum += row[static_cast<size_t>(d)];
      const_cast<float*>(j.kt)[item * D * Tp + d * Tp + t] = row[static_cast<size_t>(d)];
    }
    const_cast<int32_t*>(j.ksum)[item * Tp + t] = 128 * sum;
    quantize_row(a.present_v + (item * j.rows + t) * D, D, &vscale[t], row.data());
    for (int64_t d = 0; d < D; ++d) {
      const_cast<float*>(j.vq)[(item * Tp + t) * D + d] = row[static_cast<size_t>(d)];
    }
  }
}

// rows × head_size values of KV head h rounded to the stored cache's symmetric grid (CausalAttentionArgs::grid_bits).
void to_grid(const CausalAttentionArgs& a, const float* scales, float* x, int64_t rows, int64_t h) {
  const int64_t D = a.head_size;
  const float lo = -static_cast<float>(1 << (a.grid_bits - 1)), hi = static_cast<float>((1 << (a.grid_bits - 1)) - 1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < D; ++d) {
      const float s = a.grid_scales == 1 ? scales[0] : scales[h * D + d];
      x[r * D + d] = std::min(hi, std::max(lo, std::nearbyint(x[r * D + d] / s))) * s;
    }
}

// present = [past; new] for keys and values (the new keys transformed when asked), and the keys transposed to [D, Tp]
// (zero past T).
void fill_cache(void* p, int64_t begin, int64_t end) {
  const Driver& dr = *static_cast<const Driver*>(p);
  const CausalAttentionArgs& a = *dr.job.a;
  const int64_t D = a.head_size, T = dr.job.total, Tp = dr.job.padded, P = a.past, C = dr.job.rows;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / a.kv_heads, h = item % a.kv_heads;
    for (int which = 0; which < 2; ++which) {
      const float* past = which == 0 ? a.past_k : a.past_v;
      const float* fresh = which == 0 ? a.k : a.v;
      const HeadStrides& st = which == 0 ? a.k_strides : a.v_strides;
      float* base = which == 0 ? a.present_k : a.present_v;
      float* present = base + item * C * D;
      // GenAI's shared buffer: the past rows are already in place (same buffer, same rows per head).
      const bool in_place = base == past && dr.job.past_rows == C;
      if (a.stored_k) {
        // The stored past: read in the tiles (a decode step), or written here as the same products.
        if (!dr.job.codes) {
          const int64_t width = a.stored_bits == 4 ? D / 2 : D;
          const int8_t* code = (which == 0 ? a.stored_k : a.stored_v) + item * a.stored_rows * width;
          const float* sc = (which == 0 ? a.stored_k_scale : a.stored_v_scale) + h * D;
          for (int64_t t = 0; t < P; ++t) {
            float* out = present + t * D;
            if (a.stored_bits == 4) {
              const uint8_t* row = reinterpret_cast<const uint8_t*>(code + t * width);
              for (int64_t e = 0; e < width; ++e) {
                out[2 * e] = static_cast<float>((row[e] & 15) - 8) * sc[2 * e];
                out[2 * e + 1] = static_cast<float>((row[e] >> 4) - 8) * sc[2 * e + 1];
              }
            } else {
              for (int64_t d = 0; d < D; ++d) out[d] = static_cast<float>(code[t * D + d]) * sc[d];
            }
          }
        }
      } else if (P > 0 && !in_place) {
        std::memcpy(present, past + item * dr.job.past_rows * D, static_cast<size_t>(P * D) * sizeof(float));
      }
      for (int64_t i = 0; i < a.seq; ++i)
        std::memcpy(present + (P + i) * D, fresh + b * st.batch + h * st.head + i * st.seq, static_cast<size_t>(D) * sizeof(float));
      if (which == 0 && transforms(a)) transform_heads(a, present + P * D, a.seq, b, 0, 1, dr.isa);
      if (a.grid_bits > 0) to_grid(a, which == 0 ? a.k_grid : a.v_grid, present + P * D, a.seq, h);
      if (!in_place && C > T) std::fill(present + T * D, present + C * D, 0.0f);
    }
    if (dr.job.q8) {
      quantize_head(dr, item);
      continue;
    }
    if (!dr.job.kt) continue;
    float* kt = const_cast<float*>(dr.job.kt) + item * D * Tp;
    const float* k = a.present_k + item * C * D;
    for (int64_t j0 = 0; j0 < T; j0 += 8) {  // eight keys at a time: runs of eight floats in kt, not single ones 4·Tp bytes apart
      const int64_t n = std::min<int64_t>(8, T - j0);
      for (int64_t d = 0; d < D; ++d)
        for (int64_t r = 0; r < n; ++r) kt[d * Tp + j0 + r] = k[(j0 + r) * D + d];
    }
    for (int64_t d = 0; d < D; ++d) std::fill(kt + d * Tp + T, kt + (d + 1) * Tp, 0.0f);
  }
}

// A query that sees no key (a left-padded position): zeros, as ONNX Runtime's CPU Attention gives (see quantc/attention.h).
void empty_row(const CausalAttentionArgs& a, int64_t b, int64_t h, int64_t i) {
  float* y = a.y + b * a.y_strides.batch + h * a.y_strides.head + i * a.y_strides.seq;
  std::fill(y, y + a.head_size, 0.0f);
}

// One query row, plainly: scores over the keys it sees, max, exp, sum, then the weighted values.
void reference_row(const CausalAttentionArgs& a, int64_t T, int64_t rows, int64_t b, int64_t h, int64_t i, std::vector<float>& p) {
  const int64_t D = a.head_size, kvh = h / (a.q_heads / a.kv_heads), last = a.past + i;
  const float* q = a.q + b * a.q_strides.batch + h * a.q_strides.head + i * a.q_strides.seq;
  const float* k = a.present_k + (b * a.kv_heads + kvh) * rows * D;
  const float* v = a.present_v + (b * a.kv_heads + kvh) * rows * D;
  float* y = a.y + b * a.y_strides.batch + h * a.y_strides.head + i * a.y_strides.seq;
  p.assign(static_cast<size_t>(last + 1), 0.0f);
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j <= last; ++j) {
    if (a.key_mask && a.key_mask[b * T + j] == 0) { p[j] = -std::numeric_limits<float>::infinity(); continue; }
    float s = 0;
    for (int64_t d = 0; d < D; ++d) s += q[d] * k[j * D + d];
    p[j] = s * a.scale;
    mx = std::max(mx, p[j]);
  }
  if (mx == -std::numeric_limits<float>::infinity()) { empty_row(a, b, h, i); return; }
  float sum = 0;
  for (int64_t j = 0; j <= last; ++j) { p[j] = std::exp(p[j] - mx); sum += p[j]; }
  for (int64_t d = 0; d < D; ++d) {
    float acc = 0;
    for (int64_t j = 0; j <= last; ++j) acc += p[j] * v[j * D + d];
    y[d] = acc / sum;
  }
}

// The int8 mode's query row, plainly (the same quantities as the tiles, with std::exp): scores from the integer sums, one
// max over the row, then per key block of kAttnKeys the u8 numerators against the block's largest p · s_v.
void reference_row_q8(const AttentionJob& J, int64_t b, int64_t h, int64_t i, std::vector<float>& p) {
  const CausalAttentionArgs& a = *J.a;
  const int64_t D = a.head_size, Tp = J.padded, kvh = h / J.group, last = a.past + i, head = b * a.kv_heads + kvh;
  const float* q = a.q + b * a.q_strides.batch + h * a.q_strides.head + i * a.q_strides.seq;
  float* y = a.y + b * a.y_strides.batch + h * a.y_strides.head + i * a.y_strides.seq;
  std::vector<int8_t> q8(static_cast<size_t>(D));
  float qs = 0;
  quantize_row(q, D, &qs, q8.data());
  const float* kt = J.kt + head * D * Tp;
  const float* vq = J.vq + head * Tp * D;
  p.assign(static_cast<size_t>(last + 1), 0.0f);
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j <= last; ++j) {
    if (a.key_mask && a.key_mask[b * J.total + j] == 0) { p[j] = -std::numeric_limits<float>::infinity(); continue; }
    float dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += static_cast<float>(q8[static_cast<size_t>(d)]) * kt[d * Tp + j];
    p[j] = dot * J.kscale[head * Tp + j] * qs;
    mx = std::max(mx, p[j]);
  }
  if (mx == -std::numeric_limits<float>::infinity()) { empty_row(a, b, h, i); return; }
  float sum = 0;
  for (int64_t j = 0; j <= last; ++j) { p[j] = std::exp(p[j] - mx); sum += p[j]; }
  std::vector<double> acc(static_cast<size_t>(D), 0.0);
  for (int64_t j0 = 0; j0 <= last; j0 += kAttnKeys) {
    const int64_t j1 = std::min(j0 + kAttnKeys, last + 1);
    float pm = 0;
    for (int64_t j = j0; j < j1; ++j) pm = std::max(pm, p[j] * J.vscale[head * Tp + j]);
    if (pm == 0) continue;
    for (int64_t j = j0; j < j1; ++j) {
      const float u = std::nearbyint(std::min(p[j] * J.vscale[head * Tp + j] * (255.0f / pm), 255.0f));
      for (int64_t d = 0; d < D; ++d) acc[d] += double(pm / 255.0f) * u * vq[j * D + d];
    }
  }
  for (int64_t d = 0; d < D; ++d) y[d] = static_cast<float>(acc[d] / sum);
}

// Work item w → (batch, KV head, query block), the blocks of one head ordered short, long, short, long … (block w/2 from
// the start, then from the end) so that parallel_for's contiguous chunks get similar amounts of the triangle.
void run_items(void* p, int64_t begin, int64_t end) {
  const Driver& dr = *static_cast<const Driver*>(p);
  const AttentionJob& j = dr.job;
  const CausalAttentionArgs& a = *j.a;
  thread_local std::vector<float> scratch;
  thread_local std::vector<int64_t> empty;
  std::vector<float> row;
  for (int64_t w = begin; w < end; ++w) {
    const int64_t head = w / dr.blocks, k = w % dr.blocks;
    const int64_t qb = k % 2 == 0 ? k / 2 : dr.blocks - 1 - k / 2;
    const int64_t b = head / a.kv_heads, kvh = head % a.kv_heads;
    const int64_t i0 = qb * j.block, n = std::min(j.block, a.seq - i0);
    if (dr.isa == Isa::Reference) {
      for (int64_t i = i0; i < i0 + n; ++i)
        for (int64_t g = 0; g < j.group; ++g) {
          if (j.q8) reference_row_q8(j, b, kvh * j.group + g, i, row);
          else reference_row(a, j.total, j.rows, b, kvh * j.group + g, i, row);
        }
      continue;
    }
    scratch.resize(static_cast<size_t>(detail::attention_scratch_floats(j.group * n, a.head_size)));
    empty.resize(static_cast<size_t>(j.group * n));
    float* sc = scratch.data();
    int64_t* em = empty.data();
    const bool wide = dr.isa == Isa::Avx512Vnni;
    auto* tile = !j.q8 ? (wide ? detail::attention_tile_avx512 : detail::attention_tile_avx2)
                 : wide ? detail::attention_tile_q8_vnni
                 : dr.avx_vnni ? detail::attention_tile_q8_avxvnni : detail::attention_tile_q8_avx2;
    const int64_t ne = tile(j, b, kvh, i0, n, sc, em);
    for (int64_t e = 0; e < ne; ++e) {
      const int64_t r = empty[static_cast<size_t>(e)];
      empty_row(a, b, kvh * j.group + r % j.group, i0 + r / j.group);
    }
  }
}

}  // namespace

void causal_attention(const CausalAttentionArgs& args, Isa isa) {
  const CausalAttentionArgs* ap = &args;
  CausalAttentionArgs prepped;
  if (transforms(args)) {
    const CausalAttentionArgs& a = args;
    if (a.rope_cos) {
      if (!a.rope_sin || !a.position_ids || a.rotary_dim <= 0 || a.rotary_dim % 2 != 0 || a.rotary_dim > a.head_size || a.rope_positions <= 0)
        throw std::invalid_argument("causal_attention: the rotary embedding needs cos, sin, position ids and an even rotary_dim "
                                    "≤ the head size");
      for (int64_t e = 0; e < a.batch * a.seq; ++e)
        if (a.position_ids[e] < 0 || a.position_ids[e] >= a.rope_positions)
          throw std::invalid_argument("causal_attention: position id " + std::to_string(a.position_ids[e]) + " is outside the " +
                                      std::to_string(a.rope_positions) + " rows of the rotary tables");
    }
    int64_t pow2;
    int m;
    if (a.qk_hadamard && !hadamard_split(a.head_size, &pow2, &m))
      throw std::invalid_argument("causal_attention: no Hadamard matrix of order " + std::to_string(a.head_size));
    if (a.batch > 0 && a.seq > 0 && a.q_heads > 0 && a.head_size > 0) {
      thread_local std::vector<float> qbuf;
      qbuf.resize(static_cast<size_t>(a.batch * a.seq * a.q_heads * a.head_size));
      QueryPrep qp{&a, qbuf.data(), isa};
      parallel_for(a.batch * a.seq, a.q_heads * a.head_size * 8, prep_queries, &qp);
      prepped = a;
      prepped.q = qbuf.data();
      prepped.q_strides = {a.seq * a.q_heads * a.head_size, a.head_size, a.q_heads * a.head_size};
      ap = &prepped;
    }
  }
  const CausalAttentionArgs& a = *ap;
  if (a.batch < 0 || a.seq < 0 || a.past < 0 || a.head_size <= 0 || a.q_heads <= 0 || a.kv_heads <= 0 || a.q_heads % a.kv_heads != 0)
    throw std::invalid_argument("causal_attention: bad sizes");
  if (!a.present_k || !a.present_v || (a.past > 0 && !a.stored_k && (!a.past_k || !a.past_v)))
    throw std::invalid_argument("causal_attention: the present cache (and the past, when past > 0) must be given");
  if (a.grid_bits != 0 && ((a.grid_bits != 8 && a.grid_bits != 4) || !a.k_grid || !a.v_grid ||
                           (a.grid_scales != 1 && a.grid_scales != a.kv_heads * a.head_size)))
    throw std::invalid_argument("causal_attention: a stored cache's grid needs 8 or 4 bits and 1 or kv_heads · head_size scales");
  if ((a.stored_k != nullptr) != (a.stored_v != nullptr) ||
      (a.stored_k && (!a.stored_k_scale || !a.stored_v_scale || a.stored_rows < a.past)))
    throw std::invalid_argument("causal_attention: a stored past needs keys, values, their scales and stored_rows >= past");
  if (a.stored_k && ((a.stored_bits != 8 && a.stored_bits != 4) || (a.stored_bits == 4 && a.head_size % 2 != 0)))
    throw std::invalid_argument("causal_attention: a stored past has 8 or 4 bits (4: an even head_size), not " +
                                std::to_string(a.stored_bits));
  Driver dr;
  dr.job.a = &a;
  dr.job.total = a.past + a.seq;
  dr.job.rows = a.present_rows > 0 ? a.present_rows : dr.job.total;
  dr.job.past_rows = a.past_rows > 0 ? a.past_rows : a.past;
  if (dr.job.rows < dr.job.total || dr.job.past_rows < a.past)
    throw std::invalid_argument("causal_attention: present_rows " + std::to_string(dr.job.rows) + " < past + S = " +
                                std::to_string(dr.job.total) + ", or past_rows " + std::to_string(dr.job.past_rows) + " < past " +
                                std::to_string(a.past));
  dr.job.padded = (dr.job.total + kAttnKeys - 1) / kAttnKeys * kAttnKeys;
  dr.job.group = a.q_heads / a.kv_heads;
  // AVX-512 needs D in whole 16-float vectors, AVX2 in 8-float ones; otherwise the next path down.
  if (isa == Isa::Avx512Vnni && a.head_size % 16 != 0) isa = Isa::Avx2;
  if (isa == Isa::Avx2 && a.head_size % 8 != 0) isa = Isa::Reference;
  dr.isa = isa;
  dr.job.codes = a.stored_k != nullptr && a.seq == 1 && isa != Isa::Reference;
  const int64_t D = a.head_size, T = dr.job.total, Tp = dr.job.padded, heads = a.batch * a.kv_heads;
  thread_local std::vector<float> kt, kbias, kscale, vscale, vq;
  thread_local std::vector<int8_t> k8, v8;
  thread_local std::vector<int32_t> ksum;
  // Decode-sized calls (one query position, a tile of G rows) read the keys as stored; longer ones transpose them once.
  const bool transpose = a.seq > 1;
  dr.job.q8 = a.int8 && a.seq > 1;
  if (dr.job.q8) {
    // The int8 mode's buffers, zero past T (filled by quantize_head from the present cache).
    const size_t rows = static_cast<size_t>(heads * Tp), cells = static_cast<size_t>(heads * Tp * D);
    kscale.assign(rows, 0.0f); vscale.assign(rows, 0.0f); ksum.assign(rows, 0);
    dr.job.kscale = kscale.data(); dr.job.vscale = vscale.data(); dr.job.ksum = ksum.data();
    dr.avx_vnni = isa == Isa::Avx2 && avx_vnni_in_use();
    if (isa == Isa::Avx512Vnni || dr.avx_vnni) {
      k8.assign(cells, 0); v8.assign(cells, 0);
      dr.job.k8 = k8.data(); dr.job.v8 = v8.data();
    } else {
      kt.assign(cells, 0.0f); vq.assign(cells, 0.0f);
      dr.job.kt = kt.data(); dr.job.vq = vq.data();
    }
  }
  if (isa != Isa::Reference) {
    if (transpose && !dr.job.q8) {
      kt.resize(static_cast<size_t>(heads * D * Tp));
      dr.job.kt = kt.data();
    }
    if (a.key_mask) {
      kbias.assign(static_cast<size_t>(a.batch * Tp), -std::numeric_limits<float>::infinity());
      for (int64_t b = 0; b < a.batch; ++b)
        for (int64_t j = 0; j < T; ++j)
          if (a.key_mask[b * T + j] != 0) kbias[static_cast<size_t>(b * Tp + j)] = 0.0f;
      dr.job.kbias = kbias.data();
    }
  }
  parallel_for(heads, T * D * 2, fill_cache, &dr);
  if (a.seq == 0) return;
  // About 16 rows per tile (G query heads × positions): the tile's Q, O and scores stay in L1 beside a key block.
  dr.job.block = std::max<int64_t>(1, 16 / dr.job.group);
  dr.blocks = (a.seq + dr.job.block - 1) / dr.job.block;
  // Work of an item: its rows × the keys they see on average × D × (Q·Kᵀ + P·V). A call below ~4 M of it (one decode step
  // of a small model: ~50 µs) runs on the calling thread: handing it to the pool costs about as much, and on a loaded
  // host waits for a thread that may not be scheduled.
  const int64_t items = heads * dr.blocks, per_item = dr.job.group * dr.job.block * (a.past + a.seq / 2 + 1) * D * 2;
  if (items * per_item < (int64_t{1} << 22)) run_items(&dr, 0, items);
  else parallel_for(items, per_item, run_items, &dr, 8);
}

}  // namespace quantc
