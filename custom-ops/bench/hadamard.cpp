// ai.quantc.Hadamard's kernel: the scalar rows (what the op ran before: one thread, scalar butterflies and H_m mix), the
// AVX2 rows on one thread, and the row-parallel transform the op runs now (parallel_for: all cores). Shapes of the small
// reference llama under quarot-w4a8 (R3: 512 tokens x 8 heads of 64; R4: down_proj's input, 1408 = 44 x 32) and of
// larger models (4096; LLaMA-7B's 11008 = 172 x 64). Figures: microseconds per call and GB/s of the float rows read and
// written once (2 * rows * n * 4 bytes). Best of N runs (the machine may be shared). Usage: quantc_hadamard_bench [repeats]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <utility>
#include <vector>

#include "best_seconds.h"
#include "quantc/hadamard.h"

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 7;
  quantc_bench::print_cpu(repeats);
  std::printf("| rows | n | m x 2^k | scalar, 1 thread us | %s, 1 thread us | parallel us | parallel GB/s | speed-up |\n",
              quantc::isa_name(quantc::best_isa()));
  std::printf("|---:|---:|---|---:|---:|---:|---:|---:|\n");
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.f, 1.f);
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{{4096, 64}, {512, 1408}, {512, 4096}, {128, 11008}}) {
    std::vector<float> x(static_cast<size_t>(rows * n)), y(x.size());
    for (auto& v : x) v = d(rng);
    int64_t p2;
    int m;
    quantc::hadamard_split(n, &p2, &m);
    const double ts = quantc_bench::best_seconds(repeats, [&] {
      quantc::hadamard_transform_rows(x.data(), y.data(), rows, n, true, quantc::Isa::Reference);
    });
    const double tv = quantc_bench::best_seconds(repeats, [&] {
      quantc::hadamard_transform_rows(x.data(), y.data(), rows, n, true, quantc::best_isa());
    });
    const double tp = quantc_bench::best_seconds(repeats, [&] { quantc::hadamard_transform(x.data(), y.data(), rows, n, true); });
    std::printf("| %lld | %lld | %d x %lld | %.0f | %.0f | %.0f | %.1f | %.1fx |\n", static_cast<long long>(rows),
                static_cast<long long>(n), m, static_cast<long long>(p2), ts * 1e6, tv * 1e6, tp * 1e6, 8.0 * rows * n / tp * 1e-9,
                ts / tp);
  }
  return 0;
}
