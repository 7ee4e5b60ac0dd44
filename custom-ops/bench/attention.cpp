// ai.quantc.CausalAttention's kernel (quantc::causal_attention) on the small llama's shapes: prefill of S tokens (empty
// cache) and one decode step after S cached, every path this CPU runs, GFLOP/s of the causal work (Q·Kᵀ and P·V over the
// lower triangle: 4 · heads · D · Σ_i (past + i + 1)), plain and with RoPE and the R3 Hadamard inside (lower_attention's fused
// form; the same FLOP count, so the rate shows their cost), and prefill in the int8 mode (the same count: GOP/s). Not a test. Usage: quantc_attention_bench [S] [threads: 1 = one]
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
  return 0;
}
