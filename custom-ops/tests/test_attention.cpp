#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "quantc/attention.h"
#include "quantc/gemm.h"
#include "quantc/hadamard.h"

namespace {

// One problem: Q [B, Hq, S, D], new K/V [B, Hkv, S, D] in the 4-D layout or [B, S, H·D] in the 3-D one, a past cache
// [B, Hkv, P, D], and optionally a padding mask [B, P + S] with the first `pad[b]` keys of row b masked (left padding).
struct Problem {
  int64_t B, Hq, Hkv, S, P, D;
  bool three_d, padded;
  std::vector<float> q, k, v, pk, pv;
  std::vector<int64_t> mask;
  Problem(unsigned seed, int64_t b, int64_t hq, int64_t hkv, int64_t s, int64_t p, int64_t d, bool three, bool pad)
      : B(b), Hq(hq), Hkv(hkv), S(s), P(p), D(d), three_d(three), padded(pad) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    auto fill = [&](std::vector<float>& x, int64_t count) { x.resize(static_cast<size_t>(count)); for (auto& e : x) e = n(rng); };
    fill(q, B * Hq * S * D); fill(k, B * Hkv * S * D); fill(v, B * Hkv * S * D);
    fill(pk, B * Hkv * P * D); fill(pv, B * Hkv * P * D);
    if (padded) {
      mask.assign(static_cast<size_t>(B * (P + S)), 1);
      for (int64_t bb = 0; bb < B; ++bb)
        for (int64_t j = 0; j < std::min<int64_t>(3 * bb + 2, P + S); ++j) mask[static_cast<size_t>(bb * (P + S) + j)] = 0;
    }
  }
  quantc::HeadStrides strides(int64_t heads) const {
    return three_d ? quantc::HeadStrides{S * heads * D, D, heads * D} : quantc::HeadStrides{heads * S * D, S * D, D};
  }
  float at(const std::vector<float>& x, int64_t heads, int64_t b, int64_t h, int64_t i, int64_t d) const {
    const auto st = strides(heads);
    return x[static_cast<size_t>(b * st.batch + h * st.head + i * st.seq + d)];
  }
  // The present cache value [b, h, j, d]: past, then the new rows.
  float cache(const std::vector<float>& past, const std::vector<float>& fresh, int64_t b, int64_t h, int64_t j, int64_t d) const {
    return j < P ? past[static_cast<size_t>(((b * Hkv + h) * P + j) * D + d)] : at(fresh, Hkv, b, h, j - P, d);
  }
};

// What ONNX Attention computes on the exporters' additive mask, in double over the full S × T square:
// scores · scale + (allowed ? 0 : float32 lowest), softmax, · V; a query that sees no key gets zeros, as ONNX Runtime's
// CPU Attention gives there.
std::vector<double> oracle(const Problem& pr, float scale) {
  const int64_t T = pr.P + pr.S, G = pr.Hq / pr.Hkv;
  std::vector<double> y(static_cast<size_t>(pr.B * pr.Hq * pr.S * pr.D));
  std::vector<double> s(static_cast<size_t>(T));
  for (int64_t b = 0; b < pr.B; ++b)
    for (int64_t h = 0; h < pr.Hq; ++h)
      for (int64_t i = 0; i < pr.S; ++i) {
        double mx = -std::numeric_limits<double>::infinity();
        bool any = false;
        for (int64_t j = 0; j < T; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < pr.D; ++d) dot += double(pr.at(pr.q, pr.Hq, b, h, i, d)) * pr.cache(pr.pk, pr.k, b, h / G, j, d);
          const bool allowed = j <= pr.P + i && (!pr.padded || pr.mask[static_cast<size_t>(b * T + j)] != 0);
          s[j] = dot * scale + (allowed ? 0.0 : double(std::numeric_limits<float>::lowest()));
          any = any || allowed;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < T; ++j) { s[j] = std::exp(s[j] - mx); sum += s[j]; }
        for (int64_t d = 0; d < pr.D; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < T; ++j) acc += s[j] * pr.cache(pr.pv, pr.v, b, h / G, j, d);
          y[static_cast<size_t>(((b * pr.Hq + h) * pr.S + i) * pr.D + d)] = any ? acc / sum : 0.0;
        }
      }
  return y;
}

void check(const Problem& pr, quantc::Isa isa) {
  const int64_t T = pr.P + pr.S;
  const float scale = 1.0f / std::sqrt(static_cast<float>(pr.D));
  std::vector<float> y(pr.q.size(), std::nanf("")), present_k(static_cast<size_t>(pr.B * pr.Hkv * T * pr.D)), present_v(present_k.size());
  quantc::CausalAttentionArgs a;
  a.batch = pr.B; a.q_heads = pr.Hq; a.kv_heads = pr.Hkv; a.seq = pr.S; a.past = pr.P; a.head_size = pr.D; a.scale = scale;
  a.q = pr.q.data(); a.q_strides = pr.strides(pr.Hq);
  a.k = pr.k.data(); a.k_strides = pr.strides(pr.Hkv);
  a.v = pr.v.data(); a.v_strides = pr.strides(pr.Hkv);
  a.past_k = pr.P ? pr.pk.data() : nullptr; a.past_v = pr.P ? pr.pv.data() : nullptr;
  a.key_mask = pr.padded ? pr.mask.data() : nullptr;
  a.present_k = present_k.data(); a.present_v = present_v.data();
  a.y = y.data(); a.y_strides = pr.strides(pr.Hq);
  quantc::causal_attention(a, isa);
  const auto want = oracle(pr, scale);
  double worst = 0;
  for (int64_t b = 0; b < pr.B; ++b)
    for (int64_t h = 0; h < pr.Hq; ++h)
      for (int64_t i = 0; i < pr.S; ++i)
        for (int64_t d = 0; d < pr.D; ++d) {
          const double w = want[static_cast<size_t>(((b * pr.Hq + h) * pr.S + i) * pr.D + d)];
          const double got = pr.at(y, pr.Hq, b, h, i, d);
          const double err = std::fabs(got - w) / (1.0 + std::fabs(w));
          ASSERT_TRUE(std::isfinite(got)) << "b " << b << " h " << h << " i " << i << " d " << d;
          worst = std::max(worst, err);
        }
  EXPECT_LE(worst, 2e-6) << quantc::isa_name(isa);
  for (int64_t b = 0; b < pr.B; ++b)
    for (int64_t h = 0; h < pr.Hkv; ++h)
      for (int64_t j = 0; j < T; ++j)
        for (int64_t d = 0; d < pr.D; ++d) {
          const size_t at = static_cast<size_t>(((b * pr.Hkv + h) * T + j) * pr.D + d);
          ASSERT_EQ(present_k[at], pr.cache(pr.pk, pr.k, b, h, j, d));
          ASSERT_EQ(present_v[at], pr.cache(pr.pv, pr.v, b, h, j, d));
        }
}

// The paths this CPU runs (AVX-512 needs avx512f; the library's best_isa says what is there).
std::vector<quantc::Isa> paths() {
  std::vector<quantc::Isa> p{quantc::Isa::Reference};
  if (quantc::best_isa() != quantc::Isa::Reference) p.push_back(quantc::Isa::Avx2);
  if (quantc::best_isa() == quantc::Isa::Avx512Vnni) p.push_back(quantc::Isa::Avx512Vnni);
  else std::printf("[ skipped  ] CausalAttention AVX-512 path: this CPU has no AVX-512 VNNI\n");
  return p;
}

TEST(CausalAttention, PrefillOddShapesEqualTheFullSquareOracle) {
  unsigned seed = 1;
  for (int64_t group : {1, 4, 8})
    for (int64_t d : {64, 80, 128})
      for (int64_t s : {1, 7, 70}) {
        const int64_t hkv = group == 8 ? 1 : 2;
        Problem pr(seed++, 2, hkv * group, hkv, s, 0, d, (s + d) % 2 == 0, false);
        for (auto isa : paths()) {
          SCOPED_TRACE("G " + std::to_string(group) + " D " + std::to_string(d) + " S " + std::to_string(s));
          check(pr, isa);
        }
      }
}

TEST(CausalAttention, PastCacheAndDecodeEqualTheFullSquareOracle) {
  unsigned seed = 100;
  for (int64_t group : {1, 4, 8})
    for (int64_t d : {64, 80, 128})
      for (auto [s, p] : {std::pair<int64_t, int64_t>{1, 1}, {1, 129}, {5, 60}, {33, 67}}) {
        const bool three = ++seed % 2 == 0;
        Problem pr(seed, 2, 2 * group, 2, s, p, d, three, false);
        for (auto isa : paths()) {
          SCOPED_TRACE("G " + std::to_string(group) + " D " + std::to_string(d) + " S " + std::to_string(s) + " P " + std::to_string(p));
          check(pr, isa);
        }
      }
}

// Left padding: keys masked in every row, and the padded positions themselves see no key at all (zeros).
TEST(CausalAttention, PaddingMaskAndFullyMaskedRowsEqualTheOracle) {
  unsigned seed = 200;
  for (int64_t d : {32, 64, 72})
    for (auto [s, p] : {std::pair<int64_t, int64_t>{9, 0}, {70, 0}, {1, 5}, {6, 3}}) {
      const bool three = ++seed % 2 == 1;
      Problem pr(seed, 3, 8, 2, s, p, d, three, true);
      for (auto isa : paths()) {
        SCOPED_TRACE("D " + std::to_string(d) + " S " + std::to_string(s) + " P " + std::to_string(p));
        check(pr, isa);
      }
    }
}


// The fused transforms: RoPE (halves or interleaved pairs, full or partial rotary_dim) and/or the R3 Hadamard applied by the
// kernel to the new queries and keys must give what the plain kernel gives on queries and keys transformed beforehand (here in
// double, by the definition), and the present cache must hold the transformed keys. The inputs are read from one packed
// [B, S, (Hq + 2·Hkv)·D] buffer (lower_attention's packed QKV form) when `packed`.
struct Transform {
  bool rope, interleaved, hadamard, packed;
  int64_t rotary_dim;  // 0: the head size
};

void transform_ref(std::vector<float>& x, const Problem& pr, int64_t heads, const Transform& t, const std::vector<float>& cos,
                   const std::vector<float>& sin, const std::vector<int64_t>& pos) {
  const auto st = pr.strides(heads);
  const int64_t R = t.rotary_dim ? t.rotary_dim : pr.D, half = R / 2;
  std::vector<float> row(static_cast<size_t>(pr.D)), out(row.size());
  for (int64_t b = 0; b < pr.B; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < pr.S; ++i) {
        float* p = x.data() + b * st.batch + h * st.head + i * st.seq;
        if (t.rope) {
          const int64_t ps = pos[static_cast<size_t>(b * pr.S + i)];
          std::vector<double> r(p, p + pr.D);
          for (int64_t j = 0; j < half; ++j) {
            const int64_t a = t.interleaved ? 2 * j : j, o = t.interleaved ? 2 * j + 1 : j + half;
            const double c = cos[static_cast<size_t>(ps * half + j)], s = sin[static_cast<size_t>(ps * half + j)];
            r[a] = double(p[a]) * c - double(p[o]) * s;
            r[o] = double(p[o]) * c + double(p[a]) * s;
          }
          for (int64_t d = 0; d < pr.D; ++d) p[d] = static_cast<float>(r[d]);
        }
        if (t.hadamard) {
          std::copy(p, p + pr.D, row.begin());
          quantc::hadamard_transform_reference(row.data(), out.data(), 1, pr.D, true);
          std::copy(out.begin(), out.end(), p);
        }
      }
}

void check_transformed(unsigned seed, int64_t B, int64_t Hq, int64_t Hkv, int64_t S, int64_t P, int64_t D, const Transform& t,
                       quantc::Isa isa) {
  Problem pr(seed, B, Hq, Hkv, S, P, D, true, P > 0);
  const int64_t R = t.rotary_dim ? t.rotary_dim : D, half = R / 2, rows = P + S + 5, T = P + S;
  std::mt19937 rng(seed + 7);
  std::uniform_real_distribution<float> ang(-3.2f, 3.2f);
  std::vector<float> cos(static_cast<size_t>(rows * half)), sin(cos.size());
  for (size_t e = 0; e < cos.size(); ++e) { const float th = ang(rng); cos[e] = std::cos(th); sin[e] = std::sin(th); }
  std::vector<int64_t> pos(static_cast<size_t>(B * S));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i) pos[static_cast<size_t>(b * S + i)] = (P + i + 3 * b) % rows;
  Problem want = pr;
  transform_ref(want.q, want, Hq, t, cos, sin, pos);
  transform_ref(want.k, want, Hkv, t, cos, sin, pos);
  // The inputs as the kernel reads them: separate 3-D tensors, or one packed buffer.
  const int64_t W = (Hq + 2 * Hkv) * D;
  std::vector<float> packed(static_cast<size_t>(B * S * W));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i) {
      float* row = packed.data() + (b * S + i) * W;
      std::copy_n(pr.q.data() + (b * S + i) * Hq * D, Hq * D, row);
      std::copy_n(pr.k.data() + (b * S + i) * Hkv * D, Hkv * D, row + Hq * D);
      std::copy_n(pr.v.data() + (b * S + i) * Hkv * D, Hkv * D, row + (Hq + Hkv) * D);
    }
  const auto q_in = pr.q, k_in = pr.k, packed_in = packed;
  std::vector<float> y(pr.q.size(), std::nanf("")), present_k(static_cast<size_t>(B * Hkv * T * D)), present_v(present_k.size());
  quantc::CausalAttentionArgs a;
  a.batch = B; a.q_heads = Hq; a.kv_heads = Hkv; a.seq = S; a.past = P; a.head_size = D; a.scale = 1.0f / std::sqrt(float(D));
  if (t.packed) {
    const quantc::HeadStrides st{S * W, D, W};
    a.q = packed.data(); a.k = packed.data() + Hq * D; a.v = packed.data() + (Hq + Hkv) * D;
    a.q_strides = a.k_strides = a.v_strides = st;
  } else {
    a.q = pr.q.data(); a.q_strides = pr.strides(Hq);
    a.k = pr.k.data(); a.k_strides = pr.strides(Hkv);
    a.v = pr.v.data(); a.v_strides = pr.strides(Hkv);
  }
  a.past_k = P ? pr.pk.data() : nullptr; a.past_v = P ? pr.pv.data() : nullptr;
  a.key_mask = pr.padded ? pr.mask.data() : nullptr;
  a.present_k = present_k.data(); a.present_v = present_v.data();
  a.y = y.data(); a.y_strides = pr.strides(Hq);
  if (t.rope) {
    a.rope_cos = cos.data(); a.rope_sin = sin.data(); a.rope_positions = rows; a.rotary_dim = R;
    a.rope_interleaved = t.interleaved; a.position_ids = pos.data();
  }
  a.qk_hadamard = t.hadamard;
  quantc::causal_attention(a, isa);
  EXPECT_EQ(pr.q, q_in);
  EXPECT_EQ(pr.k, k_in);
  EXPECT_EQ(packed, packed_in) << "the inputs are never written";
  const auto expect = oracle(want, a.scale);
  double worst = 0, worst_k = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < S; ++i)
        for (int64_t d = 0; d < D; ++d) {
          const double w = expect[static_cast<size_t>(((b * Hq + h) * S + i) * D + d)];
          const double got = pr.at(y, Hq, b, h, i, d);
          ASSERT_TRUE(std::isfinite(got));
          worst = std::max(worst, std::fabs(got - w) / (1.0 + std::fabs(w)));
        }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hkv; ++h)
      for (int64_t j = 0; j < T; ++j)
        for (int64_t d = 0; d < D; ++d) {
          const size_t at = static_cast<size_t>(((b * Hkv + h) * T + j) * D + d);
          worst_k = std::max(worst_k, double(std::fabs(present_k[at] - want.cache(want.pk, want.k, b, h, j, d))));
          ASSERT_EQ(present_v[at], want.cache(want.pv, want.v, b, h, j, d));
        }
  EXPECT_LE(worst, 1e-5) << quantc::isa_name(isa);
  EXPECT_LE(worst_k, 1e-5) << quantc::isa_name(isa);
  EXPECT_NE(want.k, pr.k) << "the transform moved the keys (else the comparison shows nothing)";
}

TEST(CausalAttention, RopeAndHadamardInsideEqualTransformingFirst) {
  unsigned seed = 300;
  const Transform forms[] = {{true, false, false, false, 0}, {true, true, false, false, 0}, {false, false, true, false, 0},
                             {true, false, true, true, 0},   {true, true, true, true, 32},  {true, false, false, true, 48}};
  for (const auto& t : forms)
    for (auto [s, p, d] : {std::tuple<int64_t, int64_t, int64_t>{9, 0, 64}, {70, 0, 64}, {1, 40, 64}, {5, 33, 128}, {3, 4, 80}}) {
      if (t.rotary_dim > d) continue;
      for (auto isa : paths()) {
        SCOPED_TRACE("rope " + std::to_string(t.rope) + " interleaved " + std::to_string(t.interleaved) + " hadamard " +
                     std::to_string(t.hadamard) + " packed " + std::to_string(t.packed) + " rotary " + std::to_string(t.rotary_dim) +
                     " S " + std::to_string(s) + " P " + std::to_string(p) + " D " + std::to_string(d));
        check_transformed(seed++, 2, 8, 2, s, p, d, t, isa);
      }
    }
}

TEST(CausalAttention, BadTransformArgumentsThrow) {
  Problem pr(9, 1, 2, 1, 3, 0, 64, true, false);
  std::vector<float> y(pr.q.size()), pk(pr.k.size()), pv(pr.v.size()), cos(10 * 32, 1.0f), sin(10 * 32, 0.0f);
  std::vector<int64_t> pos{0, 1, 10};
  quantc::CausalAttentionArgs a;
  a.batch = 1; a.q_heads = 2; a.kv_heads = 1; a.seq = 3; a.head_size = 64;
  a.q = pr.q.data(); a.q_strides = pr.strides(2); a.k = pr.k.data(); a.k_strides = pr.strides(1);
  a.v = pr.v.data(); a.v_strides = pr.strides(1); a.present_k = pk.data(); a.present_v = pv.data();
  a.y = y.data(); a.y_strides = pr.strides(2);
  a.rope_cos = cos.data(); a.rope_sin = sin.data(); a.rope_positions = 10; a.rotary_dim = 64; a.position_ids = pos.data();
  EXPECT_THROW(quantc::causal_attention(a, quantc::Isa::Reference), std::invalid_argument) << "position 10 of 10 rows";
  pos[2] = 9;
  EXPECT_NO_THROW(quantc::causal_attention(a, quantc::Isa::Reference));
  a.rotary_dim = 63;
  EXPECT_THROW(quantc::causal_attention(a, quantc::Isa::Reference), std::invalid_argument) << "odd rotary_dim";
  a.rotary_dim = 64; a.rope_cos = nullptr; a.qk_hadamard = true; a.head_size = 22; a.q_heads = 2;
  EXPECT_THROW(quantc::causal_attention(a, quantc::Isa::Reference), std::invalid_argument) << "no Hadamard of order 22";
}

// The int8 mode (CausalAttentionArgs::int8): y and the present cache of one call.
// The arguments of a call on pr's queries and new keys / values (sizes, scale, strides); caches and outputs are the caller's.
quantc::CausalAttentionArgs base_args(const Problem& pr) {
  quantc::CausalAttentionArgs a;
  a.batch = pr.B; a.q_heads = pr.Hq; a.kv_heads = pr.Hkv; a.seq = pr.S; a.past = pr.P; a.head_size = pr.D;
  a.scale = 1.0f / std::sqrt(static_cast<float>(pr.D));
  a.q = pr.q.data(); a.q_strides = pr.strides(pr.Hq);
  a.k = pr.k.data(); a.k_strides = pr.strides(pr.Hkv);
  a.v = pr.v.data(); a.v_strides = pr.strides(pr.Hkv);
  return a;
}

struct Outcome {
  std::vector<float> y, pk, pv;
};

Outcome run_int8(const Problem& pr, quantc::Isa isa, bool int8) {
  const int64_t T = pr.P + pr.S;
  Outcome out{std::vector<float>(pr.q.size(), std::nanf("")), std::vector<float>(static_cast<size_t>(pr.B * pr.Hkv * T * pr.D)), {}};
  out.pv.resize(out.pk.size());
  quantc::CausalAttentionArgs a = base_args(pr);
  a.past_k = pr.P ? pr.pk.data() : nullptr; a.past_v = pr.P ? pr.pv.data() : nullptr;
  a.key_mask = pr.padded ? pr.mask.data() : nullptr;
  a.present_k = out.pk.data(); a.present_v = out.pv.data();
  a.y = out.y.data(); a.y_strides = pr.strides(pr.Hq);
  a.int8 = int8;
  quantc::causal_attention(a, isa);
  return out;
}

// Signal-to-noise of y against the double oracle, dB (the oracle's layout is [B, Hq, S, D]).
double sqnr_db(const Problem& pr, const std::vector<float>& y, const std::vector<double>& want) {
  double sig = 0, err = 0;
  for (int64_t b = 0; b < pr.B; ++b)
    for (int64_t h = 0; h < pr.Hq; ++h)
      for (int64_t i = 0; i < pr.S; ++i)
        for (int64_t d = 0; d < pr.D; ++d) {
          const double w = want[static_cast<size_t>(((b * pr.Hq + h) * pr.S + i) * pr.D + d)], got = pr.at(y, pr.Hq, b, h, i, d);
          sig += w * w;
          err += (got - w) * (got - w);
        }
  return 10.0 * std::log10(sig / std::max(err, 1e-300));
}

// Every path computes the same integers; they differ only where a float exp or sum rounds a numerator to the other u8 step
// (the reference uses std::exp, the tiles a polynomial) — rare, and one step of 1/255 of a block's largest numerator.
TEST(CausalAttentionInt8, ClosesOnTheOracleAndEveryPathAgreesWithTheReference) {
  unsigned seed = 500;
  for (int64_t group : {1, 4})
    for (int64_t d : {64, 80, 128})
      for (auto [s, p, padded] : {std::tuple<int64_t, int64_t, bool>{70, 0, false}, {33, 67, false}, {130, 0, true}, {9, 120, true}}) {
        ++seed;
        Problem pr(seed, 2, 2 * group, 2, s, p, d, seed % 2 == 0, padded);
        const auto want = oracle(pr, 1.0f / std::sqrt(static_cast<float>(d)));
        const Outcome ref = run_int8(pr, quantc::Isa::Reference, true), flt = run_int8(pr, quantc::Isa::Reference, false);
        const double db = sqnr_db(pr, ref.y, want);
        SCOPED_TRACE("G " + std::to_string(group) + " D " + std::to_string(d) + " S " + std::to_string(s) + " P " + std::to_string(p));
        EXPECT_GE(db, 30.0) << "int8 attention against the double oracle";
        EXPECT_LE(db, 60.0) << "the int8 mode must actually quantize";
        EXPECT_GE(sqnr_db(pr, flt.y, want), 100.0);
        for (auto isa : paths()) {
          const Outcome got = isa == quantc::Isa::Reference ? ref : run_int8(pr, isa, true);
          double worst = 0;
          int64_t off = 0;
          for (size_t e = 0; e < got.y.size(); ++e) {
            ASSERT_TRUE(std::isfinite(got.y[e])) << quantc::isa_name(isa);
            const double diff = std::fabs(double(got.y[e]) - ref.y[e]);
            worst = std::max(worst, diff);
            off += diff > 1e-5 * (1.0 + std::fabs(ref.y[e]));
          }
          EXPECT_LE(worst, 2e-2) << quantc::isa_name(isa);
          EXPECT_LE(off, static_cast<int64_t>(got.y.size()) / 200 + 1) << quantc::isa_name(isa) << ": more than rare rounding flips";
          EXPECT_EQ(got.pk, flt.pk) << "the present cache stays float";
          EXPECT_EQ(got.pv, flt.pv);
          std::printf("  int8 %-10s G %lld D %3lld S %3lld P %3lld: %.1f dB, worst %.2e, %lld off\n", quantc::isa_name(isa),
                      static_cast<long long>(group), static_cast<long long>(d), static_cast<long long>(s), static_cast<long long>(p),
                      sqnr_db(pr, got.y, want), worst, static_cast<long long>(off));
        }
      }
}

// One new position (a decode step) reads the float cache: the int8 flag changes nothing there, bit for bit.
TEST(CausalAttentionInt8, DecodeStepsAreTheFloatKernel) {
  Problem pr(41, 2, 8, 2, 1, 77, 64, true, true);
  for (auto isa : paths()) {
    const Outcome a = run_int8(pr, isa, true), b = run_int8(pr, isa, false);
    EXPECT_EQ(a.y, b.y) << quantc::isa_name(isa);
  }
}

// Every scale is per row and every block's u8 max runs over the keys a row sees: a position's output never depends on a
// later position's query, key or value — bit for bit, on every path.
TEST(CausalAttentionInt8, LaterPositionsNeverChangeEarlierOutputs) {
  for (int64_t d : {64, 80}) {
    Problem pr(77, 1, 8, 2, 100, 30, d, false, false);
    Problem later = pr;
    std::mt19937 rng(5);
    std::normal_distribution<float> n(0.0f, 3.0f);
    for (int64_t h = 0; h < pr.Hq; ++h)
      for (int64_t i = 90; i < 100; ++i)
        for (int64_t e = 0; e < d; ++e) later.q[static_cast<size_t>((h * pr.S + i) * d + e)] = n(rng);
    for (int64_t h = 0; h < pr.Hkv; ++h)
      for (int64_t i = 90; i < 100; ++i)
        for (int64_t e = 0; e < d; ++e) {
          later.k[static_cast<size_t>((h * pr.S + i) * d + e)] = n(rng);
          later.v[static_cast<size_t>((h * pr.S + i) * d + e)] = n(rng);
        }
    for (auto isa : paths()) {
      const Outcome a = run_int8(pr, isa, true), b = run_int8(later, isa, true);
      for (int64_t h = 0; h < pr.Hq; ++h)
        for (int64_t i = 0; i < 100; ++i) {
          const auto at = static_cast<size_t>((h * pr.S + i) * d);
          const bool same = std::equal(a.y.begin() + at, a.y.begin() + at + d, b.y.begin() + at);
          if (i < 90) ASSERT_TRUE(same) << quantc::isa_name(isa) << " D " << d << " head " << h << " position " << i;
          else ASSERT_FALSE(same) << "position " << i << " was changed";
        }
    }
  }
}

// The Avx2 path's int8 mode with AVX-VNNI (vpdpbusd on ymm over the byte layouts) and without it (the same integers summed
// in float): the same outputs bit for bit — same integers, same float steps on eight lanes.
TEST(CausalAttentionInt8, TheAvxVnniTileGivesTheAvx2TilesBits) {
  if (quantc::best_isa() == quantc::Isa::Reference) GTEST_SKIP() << "no AVX2 on this CPU";
  if (!quantc::avx_vnni_present()) GTEST_SKIP() << "this CPU has no AVX-VNNI (CPUID.7.1:EAX bit 4): only the float-summing AVX2 tile runs";
  unsigned seed = 900;
  for (int64_t group : {1, 4})
    for (int64_t d : {64, 72, 128})
      for (auto [s, p, padded] : {std::tuple<int64_t, int64_t, bool>{70, 0, false}, {33, 67, true}, {130, 0, true}}) {
        ++seed;
        Problem pr(seed, 2, 2 * group, 2, s, p, d, seed % 2 == 0, padded);
        quantc::set_avx_vnni(1);
        const Outcome vnni = run_int8(pr, quantc::Isa::Avx2, true);
        quantc::set_avx_vnni(0);
        const Outcome plain = run_int8(pr, quantc::Isa::Avx2, true);
        quantc::set_avx_vnni(-1);
        ASSERT_EQ(vnni.y, plain.y) << "G " << group << " D " << d << " S " << s << " P " << p;
        EXPECT_EQ(vnni.pk, plain.pk);
      }
}

// A cache of fixed capacity (GenAI's past_present_share_buffer): past and present of C rows per head, the first `past` valid.
// The same outputs as the plain interface bit for bit, on every path and in both modes, whether present is a separate
// buffer (past rows copied, rows after past + S zeroed) or the past buffer itself (only the new rows written); rows past the
// valid ones hold NaN and are never read.
TEST(CausalAttention, AFixedCapacityCacheGivesThePlainResultsInPlaceOrCopied) {
  for (bool int8 : {false, true})
    for (auto [S, P, D] : {std::tuple<int64_t, int64_t, int64_t>{1, 40, 64}, {17, 0, 64}, {5, 33, 80}, {70, 9, 64}}) {
      Problem pr(600 + S + P + D, 2, 8, 2, S, P, D, false, true);
      const int64_t T = P + S, C = T + 7, B = pr.B, H = pr.Hkv;
      for (auto isa : paths()) {
        const Outcome plain = run_int8(pr, isa, int8);
        // The past in a C-row buffer per head, NaN after its valid rows.
        std::vector<float> kbuf(static_cast<size_t>(B * H * C * D), std::nanf("")), vbuf(kbuf.size(), std::nanf(""));
        for (int64_t bh = 0; bh < B * H; ++bh)
          for (int64_t j = 0; j < P; ++j)
            for (int64_t d = 0; d < D; ++d) {
              kbuf[static_cast<size_t>((bh * C + j) * D + d)] = pr.pk[static_cast<size_t>((bh * P + j) * D + d)];
              vbuf[static_cast<size_t>((bh * C + j) * D + d)] = pr.pv[static_cast<size_t>((bh * P + j) * D + d)];
            }
        for (bool in_place : {false, true}) {
          std::vector<float> pk = kbuf, pv = vbuf, sep_k(kbuf.size(), std::nanf("")), sep_v(kbuf.size(), std::nanf(""));
          std::vector<float> y(pr.q.size(), std::nanf(""));
          quantc::CausalAttentionArgs a = base_args(pr);
          a.past_k = pk.data(); a.past_v = pv.data(); a.key_mask = pr.mask.data();
          a.present_k = in_place ? pk.data() : sep_k.data();
          a.present_v = in_place ? pv.data() : sep_v.data();
          a.past_rows = C; a.present_rows = C;
          a.y = y.data(); a.y_strides = pr.strides(pr.Hq);
          a.int8 = int8;
          quantc::causal_attention(a, isa);
          const std::string what = std::string(quantc::isa_name(isa)) + (int8 ? " int8" : "") + (in_place ? " in place" : " copied") +
                                   " S " + std::to_string(S) + " P " + std::to_string(P) + " D " + std::to_string(D);
          ASSERT_EQ(y, plain.y) << what;
          const std::vector<float>& out_k = in_place ? pk : sep_k;
          const std::vector<float>& out_v = in_place ? pv : sep_v;
          for (int64_t bh = 0; bh < B * H; ++bh)
            for (int64_t j = 0; j < C; ++j)
              for (int64_t d = 0; d < D; ++d) {
                const size_t at = static_cast<size_t>((bh * C + j) * D + d);
                if (j < T) {
                  ASSERT_EQ(out_k[at], plain.pk[static_cast<size_t>((bh * T + j) * D + d)]) << what << " row " << j;
                  ASSERT_EQ(out_v[at], plain.pv[static_cast<size_t>((bh * T + j) * D + d)]) << what << " row " << j;
                } else if (!in_place) {
                  ASSERT_EQ(out_k[at], 0.0f) << what << ": rows after past + S are zeroed";
                }
              }
        }
      }
    }
  Problem pr(5, 1, 2, 1, 3, 4, 64, false, false);
  std::vector<float> y(pr.q.size()), pk(pr.pk), pv(pr.pv);
  quantc::CausalAttentionArgs a;
  a.batch = 1; a.q_heads = 2; a.kv_heads = 1; a.seq = 3; a.past = 4; a.head_size = 64;
  a.q = pr.q.data(); a.q_strides = pr.strides(2); a.k = pr.k.data(); a.k_strides = pr.strides(1);
  a.v = pr.v.data(); a.v_strides = pr.strides(1); a.past_k = pk.data(); a.past_v = pv.data();
  a.present_k = pk.data(); a.present_v = pv.data(); a.y = y.data(); a.y_strides = pr.strides(2);
  a.past_rows = 4; a.present_rows = 6;  // 7 rows needed
  EXPECT_THROW(quantc::causal_attention(a, quantc::Isa::Reference), std::invalid_argument);
}

// A stored cache's grid (grid_bits): the new keys and values rounded to the symmetric grid in the present cache before anything
// reads them give, on every path, the same bits as running the plain kernel on inputs rounded to that grid first.
TEST(CausalAttention, AStoredCachesGridEqualsRoundingTheInputsFirst) {
  for (int bits : {8, 4})
    for (bool per_channel : {true, false})
      for (auto [S, P, D] : {std::tuple<int64_t, int64_t, int64_t>{1, 40, 64}, {17, 0, 64}, {9, 5, 32}}) {
        Problem pr(900 + bits + S + P, 2, 4, 2, S, P, D, false, true);
        std::vector<float> kg(per_channel ? static_cast<size_t>(pr.Hkv * D) : 1), vg(kg.size());
        for (size_t i = 0; i < kg.size(); ++i) { kg[i] = 0.02f + 0.001f * static_cast<float>(i % 17); vg[i] = 0.03f + 0.002f * static_cast<float>(i % 5); }
        if (bits == 4) for (auto& g : kg) g *= 20;
        if (bits == 4) for (auto& g : vg) g *= 20;
        const float lo = -static_cast<float>(1 << (bits - 1)), hi = static_cast<float>((1 << (bits - 1)) - 1);
        Problem rounded = pr;
        for (int which = 0; which < 2; ++which) {
          auto& x = which == 0 ? rounded.k : rounded.v;
          const auto& g = which == 0 ? kg : vg;
          for (int64_t b = 0; b < pr.B; ++b)
            for (int64_t h = 0; h < pr.Hkv; ++h)
              for (int64_t i = 0; i < S; ++i)
                for (int64_t d = 0; d < D; ++d) {
                  const auto st = pr.strides(pr.Hkv);
                  float& e = x[static_cast<size_t>(b * st.batch + h * st.head + i * st.seq + d)];
                  const float sc = per_channel ? g[static_cast<size_t>(h * D + d)] : g[0];
                  e = std::min(hi, std::max(lo, std::nearbyint(e / sc))) * sc;
                }
        }
        for (auto isa : paths()) {
          const Outcome want = run_int8(rounded, isa, false);
          const int64_t T = P + S;
          Outcome got{std::vector<float>(pr.q.size(), std::nanf("")), std::vector<float>(static_cast<size_t>(pr.B * pr.Hkv * T * D)), {}};
          got.pv.resize(got.pk.size());
          quantc::CausalAttentionArgs a = base_args(pr);
          a.past_k = P ? pr.pk.data() : nullptr; a.past_v = P ? pr.pv.data() : nullptr;
          a.key_mask = pr.mask.data();
          a.present_k = got.pk.data(); a.present_v = got.pv.data();
          a.y = got.y.data(); a.y_strides = pr.strides(pr.Hq);
          a.k_grid = kg.data(); a.v_grid = vg.data(); a.grid_scales = static_cast<int64_t>(kg.size()); a.grid_bits = bits;
          quantc::causal_attention(a, isa);
          const std::string what = std::string(quantc::isa_name(isa)) + " bits " + std::to_string(bits) +
                                   (per_channel ? " per channel" : " per tensor") + " S " + std::to_string(S) + " P " + std::to_string(P);
          ASSERT_EQ(got.y, want.y) << what;
          ASSERT_EQ(got.pk, want.pk) << what;
          ASSERT_EQ(got.pv, want.pv) << what;
        }
      }
  Problem pr(7, 1, 2, 1, 3, 0, 64, false, false);
  std::vector<float> y(pr.q.size()), pk(static_cast<size_t>(3 * 64)), pv(pk.size()), g{0.1f, 0.2f};
  quantc::CausalAttentionArgs a;
  a.batch = 1; a.q_heads = 2; a.kv_heads = 1; a.seq = 3; a.head_size = 64;
  a.q = pr.q.data(); a.q_strides = pr.strides(2); a.k = pr.k.data(); a.k_strides = pr.strides(1);
  a.v = pr.v.data(); a.v_strides = pr.strides(1); a.present_k = pk.data(); a.present_v = pv.data();
  a.y = y.data(); a.y_strides = pr.strides(2);
  a.k_grid = g.data(); a.v_grid = g.data(); a.grid_scales = 2; a.grid_bits = 8;  // neither 1 nor kv heads × head size
  EXPECT_THROW(quantc::causal_attention(a, quantc::Isa::Reference), std::invalid_argument);
}

// A stored int8 past kept where it is (stored_k / stored_v with per-channel scales): a decode step reads the codes in its tiles,
// longer calls and the reference path get the products written into the present first — bit for bit the results of the plain
// kernel on a float past holding those products, on every path, in place or not.
TEST(CausalAttention, AStoredPastGivesThePlainResultsOfItsProducts) {
  for (int bits : {8, 4})
  for (auto [S, P, D] : {std::tuple<int64_t, int64_t, int64_t>{1, 40, 64}, {1, 130, 32}, {6, 17, 64}, {1, 0, 64}, {1, 21, 16}})
    for (auto isa : paths()) {
      Problem pr(1200 + S + P + D + bits, 2, 8, 2, S, P, D, false, true);
      const int64_t H = pr.Hkv, B = pr.B, T = P + S, C = T + 3;  // stored rows per head: more than past
      const int64_t width = bits == 4 ? D / 2 : D;                // bytes per stored row
      std::mt19937 rng(static_cast<unsigned>(S + P + bits));
      const int top = bits == 4 ? 7 : 127;
      std::uniform_int_distribution<int> code(-top - 1, top);
      std::vector<int> kq(static_cast<size_t>(B * H * C * D)), vq(kq.size());
      for (auto& c : kq) c = code(rng);
      for (auto& c : vq) c = code(rng);
      // The stored bytes: int8 codes, or two q + 8 per byte, the even channel in the low nibble.
      auto store = [&](const std::vector<int>& q) {
        std::vector<int8_t> out(static_cast<size_t>(B * H * C * width));
        for (size_t i = 0; i < q.size(); ++i) {
          if (bits == 8) { out[i] = static_cast<int8_t>(q[i]); continue; }
          uint8_t& byte = reinterpret_cast<uint8_t&>(out[i / 2]);
          byte = static_cast<uint8_t>(i % 2 == 0 ? (q[i] + 8) : (byte | ((q[i] + 8) << 4)));
        }
        return out;
      };
      const std::vector<int8_t> k8 = store(kq), v8 = store(vq);
      std::vector<float> ks(static_cast<size_t>(H * D)), vs(ks.size());
      for (size_t i = 0; i < ks.size(); ++i) { ks[i] = 0.01f + 0.0003f * static_cast<float>(i % 29); vs[i] = 0.02f + 0.0005f * static_cast<float>(i % 13); }
      Problem plain = pr;  // its float past: the products
      plain.pk.assign(static_cast<size_t>(B * H * P * D), 0.0f); plain.pv.assign(plain.pk.size(), 0.0f);
      for (int64_t bh = 0; bh < B * H; ++bh)
        for (int64_t j = 0; j < P; ++j)
          for (int64_t d = 0; d < D; ++d) {
            const size_t at = static_cast<size_t>((bh * P + j) * D + d), c = static_cast<size_t>((bh * C + j) * D + d);
            plain.pk[at] = static_cast<float>(kq[c]) * ks[static_cast<size_t>((bh % H) * D + d)];
            plain.pv[at] = static_cast<float>(vq[c]) * vs[static_cast<size_t>((bh % H) * D + d)];
          }
      const Outcome want = run_int8(plain, isa, false);
      for (bool in_place : {false, true}) {
        std::vector<float> y(pr.q.size(), std::nanf("")), nk(static_cast<size_t>(B * H * T * D), std::nanf("")), nv(nk.size(), std::nanf(""));
        quantc::CausalAttentionArgs a = base_args(pr);
        a.key_mask = pr.mask.data();
        a.present_k = nk.data(); a.present_v = nv.data();
        if (in_place) { a.past_k = nk.data(); a.past_v = nv.data(); a.past_rows = T; a.present_rows = T; }
        a.stored_k = k8.data(); a.stored_v = v8.data(); a.stored_rows = C; a.stored_bits = bits;
        a.stored_k_scale = ks.data(); a.stored_v_scale = vs.data();
        a.y = y.data(); a.y_strides = pr.strides(pr.Hq);
        quantc::causal_attention(a, isa);
        const std::string what = std::string(quantc::isa_name(isa)) + (in_place ? " in place" : "") + " bits " + std::to_string(bits) +
                                 " S " + std::to_string(S) + " P " + std::to_string(P) + " D " + std::to_string(D);
        ASSERT_EQ(y, want.y) << what;
        for (int64_t bh = 0; bh < B * H; ++bh)  // the new rows are written as usual
          for (int64_t j = P; j < T; ++j)
            for (int64_t d = 0; d < D; ++d)
              ASSERT_EQ(nk[static_cast<size_t>((bh * T + j) * D + d)], want.pk[static_cast<size_t>((bh * T + j) * D + d)]) << what;
      }
    }
}

TEST(CausalAttention, AStoredPastNeedsEightOrFourBits) {
  Problem pr(77, 1, 4, 2, 1, 5, 16, false, false);
  std::vector<float> y(pr.q.size()), nk(static_cast<size_t>(pr.B * pr.Hkv * 6 * 16)), nv(nk.size()), sc(static_cast<size_t>(2 * 16), 0.1f);
  std::vector<int8_t> codes(static_cast<size_t>(pr.B * pr.Hkv * 5 * 16));
  quantc::CausalAttentionArgs a = base_args(pr);
  a.present_k = nk.data(); a.present_v = nv.data();
  a.stored_k = codes.data(); a.stored_v = codes.data(); a.stored_rows = 5; a.stored_k_scale = sc.data(); a.stored_v_scale = sc.data();
  a.y = y.data(); a.y_strides = pr.strides(pr.Hq);
  a.stored_bits = 2;
  EXPECT_THROW(quantc::causal_attention(a, quantc::Isa::Reference), std::invalid_argument);
  a.stored_bits = 4;
  EXPECT_NO_THROW(quantc::causal_attention(a, quantc::Isa::Reference));
}

}  // namespace
