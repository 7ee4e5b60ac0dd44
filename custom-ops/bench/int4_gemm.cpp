// MatMulInt4Int8 before and after packing: the unpacked per-call kernel (matmul_int4_int8, one dot product per
// (row, column); what the op ran before issue 23 and still runs for a non-constant weight) against the packed,
// register-blocked GEMM (matmul_int4_int8_packed; the weight packed once, outside the timing, as the op does at
// session creation) on every path this CPU runs. GOP/s at prefill shapes (a multiply-add counts 2), and for
// M = 1 the packed weight's GB/s (int4 bytes + scales read once per call). Both on the threads parallel_for
// starts (all cores). Best of N runs (the machine may be shared). "float A" is the same packed GEMM fed float
// activations that it quantizes per token itself (matmul_int4_f32_packed, MatMulInt4Int8 with float32 A); its GOP/s
// count the same multiply-adds, so the gap to "packed" is the cost of the in-op quantization.
// Usage: quantc_int4_gemm_bench [repeats] [unpacked: 1 (default) or 0 to leave out the slow unpacked kernel] [only M <= this]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <tuple>
#include <vector>

#include "best_seconds.h"
#include "quantc/gemm.h"

using quantc_bench::best_seconds;

namespace {

// A parallel_for host that runs every chunk on the calling thread: the "1 thread" column, free of thread start-up (the
// bench has no pool, so its multi-threaded calls pay for starting threads, which ONNX Runtime's pool does not).
void inline_runner(void*, int64_t chunks, void (*chunk)(void*, int64_t), void* job) {
  for (int64_t i = 0; i < chunks; ++i) chunk(job, i);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  const bool unpacked = argc > 2 ? std::atoi(argv[2]) != 0 : true;
  const int max_m = argc > 3 ? std::atoi(argv[3]) : 1 << 30;
  quantc_bench::print_cpu(repeats);
  std::printf("GEMV path for M <= %lld (QUANTC_INT4_GEMV_ROWS)\n", static_cast<long long>(quantc::gemv_max_rows()));
  std::vector<quantc::Isa> paths;
  for (auto isa : {quantc::Isa::Avx2, quantc::Isa::Avx512Vnni})
    if (static_cast<int>(isa) <= static_cast<int>(quantc::best_isa())) paths.push_back(isa);
    else std::printf("path %s skipped: not supported by this CPU\n", quantc::isa_name(isa));
  std::printf("| M | K | N | G | path | before GOP/s | packed GOP/s | speed-up | packed weight GB/s | 1 thread GB/s | float A GOP/s |\n");
  std::printf("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> qd(-8, 7), ad(-128, 127);
  std::normal_distribution<float> xd(0.f, 1.f);
  // Prefill tiles; decode (M = 1) at the small llama's shapes and at 4096² (L3-resident here); M = 2 .. 8 for the GEMV / GEMM
  // crossover (run once with QUANTC_INT4_GEMV_ROWS=0 for the GEMM tiles); and 8192 x 16384 (80 MiB packed, larger than
  // the last-level cache: the GEMV's DRAM figure, against quantc_mem_bandwidth).
  const std::vector<std::tuple<int, int, int>> shapes = {
      {512, 512, 1408}, {512, 1408, 512}, {512, 4096, 4096}, {1, 512, 1536}, {1, 512, 2816}, {1, 1408, 512}, {1, 4096, 4096},
      {2, 4096, 4096},  {3, 4096, 4096},  {4, 4096, 4096},   {5, 4096, 4096}, {8, 4096, 4096}, {1, 8192, 16384}};
  for (auto [M, K, N] : shapes) {
    if (M > max_m) continue;
    const int G = 32;
    std::vector<int8_t> q(static_cast<size_t>(N) * K), a(static_cast<size_t>(M) * K);
    for (auto& v : q) v = static_cast<int8_t>(qd(rng));
    for (auto& v : a) v = static_cast<int8_t>(ad(rng));
    std::vector<float> x(a.size());
    for (auto& v : x) v = xd(rng);
    std::vector<uint8_t> chunked(static_cast<size_t>(N) * K / 2);
    quantc::pack_int4_chunked(q.data(), N, K, chunked.data());
    std::vector<float> ws(static_cast<size_t>(N) * (K / G), 0.01f), y(static_cast<size_t>(M) * N);
    const quantc::PackedInt4 packed = quantc::pack_int4_gemm(chunked.data(), ws.data(), N, K, G);
    const double ops = 2.0 * M * N * K, bytes = static_cast<double>(packed.data.size() + packed.scale.size() * sizeof(float));
    for (auto isa : paths) {
      const int before_repeats = M > 4 ? std::min(repeats, 2) : repeats;  // the unpacked kernel takes seconds at M = 512
      const double tb = !unpacked ? 0.0 : best_seconds(before_repeats, [&] {
        quantc::matmul_int4_int8(a.data(), chunked.data(), M, N, K, G, 0.02f, ws.data(), nullptr, y.data(), isa);
      });
      const double tp = best_seconds(repeats, [&] { quantc::matmul_int4_int8_packed(a.data(), packed, M, 0.02f, nullptr, y.data(), isa); });
      const double tf = best_seconds(repeats, [&] { quantc::matmul_int4_f32_packed(x.data(), packed, M, 1.0f, nullptr, y.data(), isa); });
      char gbs[32] = "-", gbs1[32] = "-", before[32] = "-", speedup[32] = "-";  // GB/s where the weight stream is the limit (M <= 8)
      if (M <= 8) {
        std::snprintf(gbs, sizeof gbs, "%.1f", bytes / tp * 1e-9);
        quantc::ScopedParallelRunner one(inline_runner, nullptr);
        const double t1 = best_seconds(repeats, [&] { quantc::matmul_int4_int8_packed(a.data(), packed, M, 0.02f, nullptr, y.data(), isa); });
        std::snprintf(gbs1, sizeof gbs1, "%.1f", bytes / t1 * 1e-9);
      }
      if (unpacked) {
        std::snprintf(before, sizeof before, "%.1f", ops / tb * 1e-9);
        std::snprintf(speedup, sizeof speedup, "%.2fx", tb / tp);
      }
      std::printf("| %d | %d | %d | %d | %s | %s | %.1f | %s | %s | %s | %.1f |\n", M, K, N, G, quantc::isa_name(isa), before, ops / tp * 1e-9,
                  speedup, gbs, gbs1, ops / tf * 1e-9);
    }
  }
  return 0;
}
