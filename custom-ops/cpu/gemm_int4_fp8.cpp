#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "quantc/gemm.h"
#include "quantc/gemm_fp8.h"

namespace quantc {

float fp8_e4m3fn_to_float(uint8_t b) {
  int e = (b >> 3) & 0xF, m = b & 7;
  if (e == 0xF && m == 7) return std::nanf("");
  float mag = e == 0 ? std::ldexp(static_cast<float>(m), -9) : std::ldexp(static_cast<float>(8 + m), e - 10);
  return (b & 0x80) ? -mag : mag;
}

int32_t fp8_e4m3fn_units(float x) {
  float a = std::fabs(x);
  int32_t u;
  if (std::isnan(x)) {
    u = 0;  // the caller makes the row NaN
  } else if (a >= 448.0f) {
    u = 229376;  // saturate (448 = 229376 * 2^-9)
  } else if (a == 0.0f) {
    u = 0;
  } else {
    // The grid spacing at a's binade: 2^(e - 3) for normal values (e >= -6), 2^-9 below.
    int e = std::max(std::ilogb(a), -6);
    float m = std::nearbyint(std::ldexp(a, 3 - e));  // round half to even (the default rounding mode)
    u = static_cast<int32_t>(m) << (e - 3 + 9);
  }
  return std::signbit(x) ? -u : u;
}

namespace {

struct Job {
  const std::vector<double>* a;  // [M, K] units
  const std::vector<float>* row_scale;
  const uint8_t* w;
  const uint8_t* w_scale;
  int64_t M, N, K, group, t_exponent;
  float* y;
};

// Four partial sums: every partial sum is an integer below 2^53, so each is exact and their order does not matter.
double dot_exact(const double* a, const double* b, int64_t K) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    s0 += a[k] * b[k];
    s1 += a[k + 1] * b[k + 1];
    s2 += a[k + 2] * b[k + 2];
    s3 += a[k + 3] * b[k + 3];
  }
  for (; k < K; ++k) s0 += a[k] * b[k];
  return (s0 + s1) + (s2 + s3);
}

void run_columns(void* p, int64_t n0, int64_t n1) {
  const Job& j = *static_cast<const Job*>(p);
  const int64_t K = j.K, groups = K / j.group, row_bytes = (K + 1) / 2;
  std::vector<double> b(static_cast<size_t>(K));
  const float inv_t = std::ldexp(1.0f, -static_cast<int>(j.t_exponent));
  for (int64_t n = n0; n < n1; ++n) {
    // The dequantized row: fp8(q * s) for the 16 int4 values of each group, looked up per k.
    const uint8_t* wr = j.w + n * row_bytes;
    for (int64_t g = 0; g < groups; ++g) {
      float s = fp8_e4m3fn_to_float(j.w_scale[n * groups + g]);
      double lut[16];
      for (int q = -8; q < 8; ++q) lut[q & 0xF] = fp8_e4m3fn_units(static_cast<float>(q) * s);
      for (int64_t k = g * j.group; k < (g + 1) * j.group; ++k) b[static_cast<size_t>(k)] = lut[(wr[k >> 1] >> ((k & 1) * 4)) & 0xF];
    }
    for (int64_t m = 0; m < j.M; ++m) {
      double acc = dot_exact(j.a->data() + m * K, b.data(), K);
      j.y[m * j.N + n] = std::ldexp(static_cast<float>(acc), -18) * ((*j.row_scale)[static_cast<size_t>(m)] * inv_t);
    }
  }
}

}  // namespace

void matmul_int4_fp8(const float* x, const uint8_t* w, const uint8_t* w_scale, int64_t M, int64_t N, int64_t K, int64_t group_size,
                     int64_t t_exponent, float* y) {
  if (K <= 0 || N <= 0 || M < 0) throw std::invalid_argument("MatMulInt4Fp8: empty K or N");
  if (group_size <= 0 || K % group_size) throw std::invalid_argument("MatMulInt4Fp8: K must be a multiple of group_size");
  if (K > kInt4Fp8MaxK) throw std::invalid_argument("MatMulInt4Fp8: K above 65536 (the exact sum's bound)");
  if (t_exponent < -64 || t_exponent > 64) throw std::invalid_argument("MatMulInt4Fp8: t_exponent out of [-64, 64]");
  std::vector<double> a(static_cast<size_t>(M * K));
  std::vector<float> row_scale(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    float mx = 0.0f;
    bool nan = false;
    for (int64_t k = 0; k < K; ++k) {
      mx = std::max(mx, std::fabs(xr[k]));
      nan |= std::isnan(xr[k]);
    }
    float s = std::max(mx, 1e-12f) / 448.0f;
    row_scale[static_cast<size_t>(m)] = nan ? std::nanf("") : s;  // a NaN (or a row with one) gives NaN outputs
    for (int64_t k = 0; k < K; ++k) a[static_cast<size_t>(m * K + k)] = fp8_e4m3fn_units(xr[k] / s);
  }
  Job job{&a, &row_scale, w, w_scale, M, N, K, group_size, t_exponent, y};
  parallel_for(N, M * K, run_columns, &job);
}

}  // namespace quantc
