// ai.quantc.CausalAttention's kernel (quantc::causal_attention) on the small llama's shapes: prefill of S tokens (empty
// cache) and one decode step after S cached, every path this CPU runs, GFLOP/s of the causal work (Q·Kᵀ and P·V over the
// lower triangle: 4 · heads · D · Σ_i (past + i + 1)), plain and with RoPE and the R3 Hadamard inside (lower_attention's fused
// form; the same FLOP count, so the rate shows their cost), and prefill in the int8 mode (the same count: GOP/s); then a
// decode step over a cache stored as int8 / 4-bit codes (CausalAttentionArgs::stored_k, read in the tiles) against the float
// cache and against dequantizing the stored past into floats first (what the op did before). Not a test.
// Usage: quantc_attention_bench [S] [threads: 1 = one]
// QUANTC_BENCH_CLOCK=cpu times process CPU seconds (all threads) instead of wall time.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "best_seconds.h"
#include "quantc/attention.h"

namespace {

void run(const char* what, int64_t S, int64_t P, int64_t H, int64_t KH, int64_t D, int repeats, bool fused, bool int8 = false) {
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  auto fill = [&](int64_t count) { std::vector<float> v(static_cast<size_t>(count)); for (auto& e : v) e = n(rng); return v; };
  const int64_t T = P + S;
  auto q = fill(S * H * D), k = fill(S * KH * D), v = fill(S * KH * D), pk = fill(KH * P * D), pv = fill(KH * P * D);
  std::vector<float> y(q.size()), present_k(static_cast<size_t>(KH * T * D)), present_v(present_k.size());
  std::vector<int64_t> mask(static_cast<size_t>(T), 1);
  quantc::CausalAttentionArgs a;
  a.batch = 1; a.q_heads = H; a.kv_heads = KH; a.seq = S; a.past = P; a.head_size = D; a.scale = 0.125f;
  a.q = q.data(); a.q_strides = {S * H * D, D, H * D};
  a.k = k.data(); a.k_strides = {S * KH * D, D, KH * D};
  a.v = v.data(); a.v_strides = a.k_strides;
  a.past_k = P ? pk.data() : nullptr; a.past_v = P ? pv.data() : nullptr; a.key_mask = mask.data();
  a.present_k = present_k.data(); a.present_v = present_v.data(); a.y = y.data(); a.y_strides = a.q_strides;
  // lower_attention's fused form: RoPE (full head, halves) and the R3 Hadamard on the new queries and keys inside the op.
  std::vector<float> cos(static_cast<size_t>((T + 1) * D / 2)), sin(cos.size());
  for (size_t e = 0; e < cos.size(); ++e) { cos[e] = std::cos(0.01f * static_cast<float>(e)); sin[e] = std::sin(0.01f * static_cast<float>(e)); }
  std::vector<int64_t> pos(static_cast<size_t>(S));
  for (int64_t i = 0; i < S; ++i) pos[static_cast<size_t>(i)] = P + i;
  if (fused) {
    a.rope_cos = cos.data(); a.rope_sin = sin.data(); a.rope_positions = T + 1; a.rotary_dim = D; a.position_ids = pos.data();
    a.qk_hadamard = true;
  }
  a.int8 = int8;
  double flops = 0;
  for (int64_t i = 0; i < S; ++i) flops += 4.0 * static_cast<double>(H * D * (P + i + 1));
  for (auto isa : {quantc::Isa::Reference, quantc::Isa::Avx2, quantc::Isa::Avx512Vnni}) {
    if (static_cast<int>(isa) > static_cast<int>(quantc::best_isa())) continue;
    const int reps = isa == quantc::Isa::Reference ? 1 : repeats;
    const double t = quantc_bench::best_seconds(reps, [&] { quantc::causal_attention(a, isa); });
    std::printf("%-8s%s%s S %4lld past %4lld  %-10s %9.3f ms  %6.1f GFLOP/s\n", what, fused ? " +RoPE+R3" : "         ", int8 ? " int8" : "     ", static_cast<long long>(S), static_cast<long long>(P),
                quantc::isa_name(isa), t * 1e3, flops / t * 1e-9);
  }
}

// One decode step after P cached rows: the float past; the past stored as `bits`-bit codes read in the tiles; and the same
// codes dequantized into a float past first, then the float kernel.
void run_stored(int64_t P, int64_t H, int64_t KH, int64_t D, int repeats) {
  std::mt19937 rng(2);
  std::normal_distribution<float> n(0.0f, 1.0f);
  auto fill = [&](int64_t count) { std::vector<float> v(static_cast<size_t>(count)); for (auto& e : v) e = n(rng); return v; };
  const int64_t T = P + 1;
  auto q = fill(H * D), k = fill(KH * D), v = fill(KH * D), pk = fill(KH * P * D), pv = fill(KH * P * D);
  std::vector<float> y(q.size()), present_k(static_cast<size_t>(KH * T * D)), present_v(present_k.size());
  std::vector<float> scales(static_cast<size_t>(KH * D));
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = 0.02f + 0.001f * static_cast<float>(i % 7);
  std::vector<int64_t> mask(static_cast<size_t>(T), 1);
  const double flops = 4.0 * static_cast<double>(H * D * T);
  for (int bits : {0, 8, 4}) {
    const int64_t width = bits == 4 ? D / 2 : D;
    std::vector<int8_t> kc(static_cast<size_t>(KH * P * width)), vc(kc.size());
    std::uniform_int_distribution<int> code(bits == 4 ? 0 : -127, bits == 4 ? 255 : 127);
    for (auto& c : kc) c = static_cast<int8_t>(code(rng));
    for (auto& c : vc) c = static_cast<int8_t>(code(rng));
    quantc::CausalAttentionArgs a;
    a.batch = 1; a.q_heads = H; a.kv_heads = KH; a.seq = 1; a.past = P; a.head_size = D; a.scale = 0.125f;
    a.q = q.data(); a.q_strides = {H * D, D, H * D};
    a.k = k.data(); a.k_strides = {KH * D, D, KH * D};
    a.v = v.data(); a.v_strides = a.k_strides;
    a.key_mask = mask.data(); a.y = y.data(); a.y_strides = a.q_strides;
    a.present_k = present_k.data(); a.present_v = present_v.data();
    // The op's in-place mode: past and present one buffer of T rows per head.
    a.past_k = present_k.data(); a.past_v = present_v.data(); a.past_rows = T; a.present_rows = T;
    if (bits == 0) {
      for (int64_t h = 0; h < KH; ++h)
        for (int64_t t = 0; t < P; ++t)
          for (int64_t d = 0; d < D; ++d) {
            present_k[static_cast<size_t>((h * T + t) * D + d)] = pk[static_cast<size_t>((h * P + t) * D + d)];
            present_v[static_cast<size_t>((h * T + t) * D + d)] = pv[static_cast<size_t>((h * P + t) * D + d)];
          }
    }
    for (auto isa : {quantc::Isa::Avx2, quantc::Isa::Avx512Vnni}) {
      if (static_cast<int>(isa) > static_cast<int>(quantc::best_isa())) continue;
      for (int dequant_first : {0, 1}) {
        if (bits == 0 && dequant_first) continue;
        quantc::CausalAttentionArgs b = a;
        if (bits != 0 && !dequant_first) {
          b.stored_k = kc.data(); b.stored_v = vc.data(); b.stored_rows = P; b.stored_bits = bits;
          b.stored_k_scale = scales.data(); b.stored_v_scale = scales.data();
        }
        auto dequant = [&] {
          for (int which = 0; which < 2; ++which) {
            const int8_t* src = which == 0 ? kc.data() : vc.data();
            float* dst = which == 0 ? present_k.data() : present_v.data();
            for (int64_t h = 0; h < KH; ++h)
              for (int64_t t = 0; t < P; ++t) {
                const int8_t* row = src + (h * P + t) * width;
                float* out = dst + (h * T + t) * D;
                const float* sc = scales.data() + h * D;
                if (bits == 8) {
                  for (int64_t d = 0; d < D; ++d) out[d] = static_cast<float>(row[d]) * sc[d];
                } else {
                  const uint8_t* u = reinterpret_cast<const uint8_t*>(row);
                  for (int64_t e = 0; e < width; ++e) {
                    out[2 * e] = static_cast<float>((u[e] & 15) - 8) * sc[2 * e];
                    out[2 * e + 1] = static_cast<float>((u[e] >> 4) - 8) * sc[2 * e + 1];
                  }
                }
              }
          }
        };
        const double t = quantc_bench::best_seconds(repeats, [&] {
          if (dequant_first) dequant();
          quantc::causal_attention(b, isa);
        });
        const char* how = bits == 0 ? "float cache" : dequant_first ? "dequantized first" : "codes in the tiles";
        std::printf("decode  %2lld/%lld heads D %3lld past %5lld  cache %-5s %-18s %-10s %9.4f ms  %6.1f GFLOP/s\n",
                    static_cast<long long>(H), static_cast<long long>(KH), static_cast<long long>(D), static_cast<long long>(P),
                    bits == 0 ? "fp32" : bits == 8 ? "int8" : "int4", how, quantc::isa_name(isa), t * 1e3, flops / t * 1e-9);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t S = argc > 1 ? std::atoll(argv[1]) : 512;
  const int repeats = 7;
  quantc_bench::print_cpu(repeats);
  for (bool fused : {false, true}) {
    run("prefill", S, 0, 8, 2, 64, repeats, fused);
    run("decode", 1, S, 8, 2, 64, repeats * 20, fused);
  }
  // The int8 mode (Q·Kᵀ and P·V in int8; a decode step reads the float cache, so only prefill changes).
  run("prefill", S, 0, 8, 2, 64, repeats, false, true);
  run("prefill", S, 0, 8, 2, 64, repeats, true, true);
  // A decode step over a stored cache (the small llama's heads; and a LLaMA-7B-like layer's 32 heads of 128, 8 KV heads).
  for (int64_t P : {S, 4 * S}) run_stored(P, 8, 2, 64, repeats * 20);
  run_stored(4 * S, 32, 8, 128, repeats * 10);
  return 0;
}
