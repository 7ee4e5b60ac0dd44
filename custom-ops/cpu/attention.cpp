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
  int64_t blocks = 0;  // query blocks per (batch, KV head)
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

// present = [past; new] for keys and values (the new keys transformed when asked), and the keys transposed to [D, Tp]
// (zero past T).
void fill_cache(void* p, int64_t begin, int64_t end) {
  const Driver& dr = *static_cast<const Driver*>(p);
  const CausalAttentionArgs& a = *dr.job.a;
  const int64_t D = a.head_size, T = dr.job.total, Tp = dr.job.padded, P = a.past;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / a.kv_heads, h = item % a.kv_heads;
    for (int which = 0; which < 2; ++which) {
      const float* past = which == 0 ? a.past_k : a.past_v;
      const float* fresh = which == 0 ? a.k : a.v;
      const HeadStrides& st = which == 0 ? a.k_strides : a.v_strides;
      float* present = (which == 0 ? a.present_k : a.present_v) + item * T * D;
      if (P > 0) std::memcpy(present, past + item * P * D, static_cast<size_t>(P * D) * sizeof(float));
      for (int64_t i = 0; i < a.seq; ++i)
        std::memcpy(present + (P + i) * D, fresh + b * st.batch + h * st.head + i * st.seq, static_cast<size_t>(D) * sizeof(float));
      if (which == 0 && transforms(a)) transform_heads(a, present + P * D, a.seq, b, 0, 1, dr.isa);
    }
    if (!dr.job.kt) continue;
    float* kt = const_cast<float*>(dr.job.kt) + item * D * Tp;
    const float* k = a.present_k + item * T * D;
    for (int64_t j = 0; j < T; ++j)
      for (int64_t d = 0; d < D; ++d) kt[d * Tp + j] = k[j * D + d];
    for (int64_t d = 0; d < D; ++d) std::fill(kt + d * Tp + T, kt + (d + 1) * Tp, 0.0f);
  }
}

// A query that sees no key (a left-padded position): zeros, as ONNX Runtime's CPU Attention gives (see quantc/attention.h).
void empty_row(const CausalAttentionArgs& a, int64_t b, int64_t h, int64_t i) {
  float* y = a.y + b * a.y_strides.batch + h * a.y_strides.head + i * a.y_strides.seq;
  std::fill(y, y + a.head_size, 0.0f);
}

// One query row, plainly: scores over the keys it sees, max, exp, sum, then the weighted values.
void reference_row(const CausalAttentionArgs& a, int64_t T, int64_t b, int64_t h, int64_t i, std::vector<float>& p) {
  const int64_t D = a.head_size, kvh = h / (a.q_heads / a.kv_heads), last = a.past + i;
  const float* q = a.q + b * a.q_strides.batch + h * a.q_strides.head + i * a.q_strides.seq;
  const float* k = a.present_k + (b * a.kv_heads + kvh) * T * D;
  const float* v = a.present_v + (b * a.kv_heads + kvh) * T * D;
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
        for (int64_t g = 0; g < j.group; ++g) reference_row(a, j.total, b, kvh * j.group + g, i, row);
      continue;
    }
    scratch.resize(static_cast<size_t>(detail::attention_scratch_floats(j.group * n, a.head_size)));
    empty.resize(static_cast<size_t>(j.group * n));
    const int64_t ne = dr.isa == Isa::Avx512Vnni ? detail::attention_tile_avx512(j, b, kvh, i0, n, scratch.data(), empty.data())
                                                 : detail::attention_tile_avx2(j, b, kvh, i0, n, scratch.data(), empty.data());
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
  if (!a.present_k || !a.present_v || (a.past > 0 && (!a.past_k || !a.past_v)))
    throw std::invalid_argument("causal_attention: the present cache (and the past, when past > 0) must be given");
  Driver dr;
  dr.job.a = &a;
  dr.job.total = a.past + a.seq;
  dr.job.padded = (dr.job.total + kAttnKeys - 1) / kAttnKeys * kAttnKeys;
  dr.job.group = a.q_heads / a.kv_heads;
  // AVX-512 needs D in whole 16-float vectors, AVX2 in 8-float ones; otherwise the next path down.
  if (isa == Isa::Avx512Vnni && a.head_size % 16 != 0) isa = Isa::Avx2;
  if (isa == Isa::Avx2 && a.head_size % 8 != 0) isa = Isa::Reference;
  dr.isa = isa;
  const int64_t D = a.head_size, T = dr.job.total, Tp = dr.job.padded, heads = a.batch * a.kv_heads;
  thread_local std::vector<float> kt, kbias;
  // Decode-sized calls (one query position, a tile of G rows) read the keys as stored; longer ones transpose them once.
  const bool transpose = a.seq > 1;
  if (isa != Isa::Reference) {
    if (transpose) {
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
