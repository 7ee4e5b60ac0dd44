// Integer GEMM kernels of ai.quantc.MatMulInt8 (and, later, MatMulInt4Int8).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace quantc {

// Which code path a kernel call takes.
enum class Isa { Reference, Avx2, Avx512Vnni };

// The best path this CPU supports (can be capped with QUANTC_ISA=reference|avx2|avx512vnni).
Isa best_isa();
const char* isa_name(Isa isa);

// AVX-VNNI: the VEX encoding of vpdpbusd on 256-bit vectors (Intel cores since Alder Lake, AMD Zen 5), on CPUs with or
// without AVX-512. The Avx2 path's W4A8 GEMM tile uses it where the CPU has it — the same integer sums, so the same results
// bit for bit — unless QUANTC_AVXVNNI=0. set_avx_vnni overrides that for the process (the tests run both): 1 = use it where
// present, 0 = the plain AVX2 tile, -1 = as detected.
bool avx_vnni_present();
bool avx_vnni_in_use();
void set_avx_vnni(int mode);

// y[m][n] = (sum_k a[m][k] * b[n][k]) * a_scale * b_scale[n] + (bias ? bias[n] : 0)
// a: int8 [M, K] row-major; b: int8 [N, K] (one row per output channel, i.e. the weight
// transposed so both operands run contiguously along K); int32 accumulation, exact.
void matmul_int8(const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K, float a_scale,
                 const float* b_scale, const float* bias, float* y, Isa isa);

// The int32 accumulators only (for exactness tests): acc[m][n] = sum_k a[m][k] * b[n][k].
void matmul_int8_accumulate(const int8_t* a, const int8_t* b, int64_t M, int64_t N, int64_t K, int32_t* acc, Isa isa);

// Runs fn(begin, end) over [0, count) split across threads (serially when the work is small). On a host's pool (below) the
// range goes in pieces_per_thread pieces per thread, which the pool hands out as its threads come free (uneven items, a
// loaded host); on its own threads in one piece each.
void parallel_for(int64_t count, int64_t work_per_item, void (*fn)(void*, int64_t, int64_t), void* ctx, int pieces_per_thread = 1);

// The threads parallel_for splits over: std::thread::hardware_concurrency(), read once (glibc reads /sys on every call of
// it, 12-15 µs each on the shared host: more than a decode GEMV's own work).
int parallel_threads();

// Where parallel_for runs its chunks. By default on threads it starts itself; a host with a thread
// pool (the ONNX Runtime binding: the session's intra-op pool) installs a runner for the calling
// thread while a kernel runs, so the kernels neither start threads nor compete with the pool's.
// A runner must call chunk(job, i) once for each i in [0, chunks) and return when all are done.
using ParallelRunner = void (*)(void* host, int64_t chunks, void (*chunk)(void* job, int64_t i), void* job);

class ScopedParallelRunner {
 public:
  ScopedParallelRunner(ParallelRunner runner, void* host);
  ~ScopedParallelRunner();
  ScopedParallelRunner(const ScopedParallelRunner&) = delete;
  ScopedParallelRunner& operator=(const ScopedParallelRunner&) = delete;

 private:
  ParallelRunner saved_runner_;
  void* saved_host_;
};

// B (int8 [N, K]) repacked for the AVX2 GEMM: panels of 8 output channels, each k-pair of a panel
// 16 bytes (channel j's B[n0 + j][2q], B[n0 + j][2q + 1] at bytes 2j, 2j + 1); K and N padded with
// zeros. Pack once for a constant weight.
// When every weight is in [-64, 63] (7-bit, "int7" / reduce_range), the pack is the u8s8 layout
// instead: k-quads, each 32 bytes (channel j's B[n0 + j][4q .. 4q + 3] at bytes 4j .. 4j + 3), for
// vpmaddubsw on A + 128 (u8), exact since 2 * 255 * 64 fits int16; colsum128[n] = 128 * sum_k B[n][k]
// (the real weights only) is subtracted from the int32 sums.
struct PackedBAvx2 {
  int64_t N = 0, K = 0, Kp = 0, panels = 0;  // Kp = ceil(K / 2), or ceil(K / 4) when u8s8
  bool u8s8 = false;
  std::vector<int8_t> data;                  // [panels][Kp][8][2], or [panels][Kp][8][4] when u8s8
  std::vector<int32_t> colsum128;            // [panels * 8] when u8s8 (0 for the padding channels)
};

PackedBAvx2 pack_b_avx2(const int8_t* b, int64_t N, int64_t K);

// matmul_int8 with the packed weight (AVX2 only); the same results as Isa::Reference, bit for bit.
void matmul_int8_avx2_packed(const int8_t* a, const PackedBAvx2& b, int64_t M, float a_scale, const float* b_scale, const float* bias, float* y);

}  // namespace quantc

namespace quantc {

// W4A8: y[m][n] = sum_g (sum_{k in g} a[m][k] * w[n][k]) * a_scale * w_scale[n][g] + bias[n], the group
// sums exact in int32, accumulated over groups in float in order g = 0, 1, ...
// w is int4 packed in chunks of 64 along K: byte j (0..31) of chunk c holds k = 64c + j in its low
// nibble and k = 64c + 32 + j in its high nibble (two's-complement int4). K % 64 == 0 and
// group_size in {32, 64, 128}. w_scale is [N, K / group_size].
void matmul_int4_int8(const int8_t* a, const uint8_t* w, int64_t M, int64_t N, int64_t K, int64_t group_size, float a_scale,
                      const float* w_scale, const float* bias, float* y, Isa isa);

// Packs int8 values in [-8, 7] ([N, K] row-major) into the layout above ([N, K / 2] bytes).
void pack_int4_chunked(const int8_t* w, int64_t N, int64_t K, uint8_t* packed);

// The chunked int4 weight and its scales repacked once (for a constant weight) for the register-blocked
// GEMM: panels of 16 output channels; each block of 8 k's of a panel is one 64-byte vector whose lane j
// (bytes 4j .. 4j + 3) holds channel n0 + j's k = 8b + i (i < 4) in the low nibble and 8b + 4 + i in the
// high nibble, biased: w + 8 in [0, 15], the unsigned operand of vpdpbusd / vpmaddubsw against the signed
// activations; the bias is removed exactly per (row, group) with 8 * (sum of the group's activations).
// Padding channels hold w = 0 and scale 0. scale is [panels][K / G][16] (w_scale transposed per panel).
struct PackedInt4 {
  int64_t N = 0, K = 0, G = 0, panels = 0;
  std::vector<uint8_t> data;  // [panels][K / 8][64]
  std::vector<float> scale;   // [panels][K / G][16]
};

PackedInt4 pack_int4_gemm(const uint8_t* w, const float* w_scale, int64_t N, int64_t K, int64_t group_size);

// matmul_int4_int8 with the packed weight (Isa::Avx2 or Isa::Avx512Vnni): the same float results as the
// reference, bit for bit (int32 group sums, folded in group order as acc += float(sum) * (a_scale * w_scale),
// then + bias). Tiles of 4 rows x 32 channels (VNNI), one row x 64 channels when M == 1 (decode), 3 rows x
// 16 channels (AVX2); parallel over (channel block, 64-row block) work items.
void matmul_int4_int8_packed(const int8_t* a, const PackedInt4& p, int64_t M, float a_scale, const float* bias, float* y, Isa isa);

// The packed kernels take their GEMV path (every row in one tile: the packed weight read once per call, parallel over
// output-channel panels) for M <= gemv_max_rows(), the GEMM tiles above it. 1 by default (the measured crossover); the variable
// QUANTC_INT4_GEMV_ROWS (0 .. 4, read once) overrides it, for measuring the crossover.
int64_t gemv_max_rows();

// The same with a float A quantized per token inside (MatMulInt4Int8 with float32 A; what lower_w4a8's graph did with
// Abs, ReduceMax, Max, Div, Div, QuantizeLinear and a Mul): q = quantize_rows_int8(x) (quantize.h: s[m] = max(max_k
// |x[m][k]|, 1e-12) / 127, q = saturate(round_half_even(x / s[m]))), then y[m][n] = matmul_int4_int8(q)[m][n] without
// bias, times s[m], + bias[n] — bit for bit. Row preparation (scale, quantization, group sums) runs in parallel over
// rows; the calling thread's buffers are reused from call to call.
// With hadamard (MatMulInt4Int8's `hadamard` attribute: QuaRot's online R4 folded into the op), each row of x is first
// transformed, x' = H_K x (/ sqrt(K) when Normalized) by hadamard_transform_rows (hadamard.h), and x' quantized as above:
// bit for bit what ai.quantc.Hadamard followed by this op computes. Throws std::invalid_argument when K has no Hadamard order.
enum class RowHadamard { None, Normalized, Unnormalized };
void matmul_int4_f32_packed(const float* x, const PackedInt4& p, int64_t M, float a_scale, const float* bias, float* y, Isa isa,
                            RowHadamard hadamard = RowHadamard::None);

}  // namespace quantc

#include <vector>

namespace quantc {

// B (int8 [N, K]) repacked for the AVX-512 VNNI GEMM: panels of 16 output channels, each k-quad of
// a panel one 64-byte vector (lane j = B[n0 + j][4q .. 4q + 3]); K and N padded with zeros. Also
// the per-channel sums of B, for the unsigned-offset correction. Pack once for a constant weight.
struct PackedB {
  int64_t N = 0, K = 0, Kq = 0, panels = 0;  // Kq = ceil(K / 4)
  std::vector<int8_t> data;                  // [panels][Kq][16][4]
  std::vector<int32_t> col_sum;              // [panels * 16]
};

PackedB pack_b_vnni(const int8_t* b, int64_t N, int64_t K);

// y = (a · Bᵀ) · a_scale · b_scale[n] + bias[n] with the packed weight (AVX-512 VNNI only).
void matmul_int8_vnni_packed(const int8_t* a, const PackedB& b, int64_t M, float a_scale, const float* b_scale, const float* bias, float* y);

}  // namespace quantc
