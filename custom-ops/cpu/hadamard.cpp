#include "quantc/hadamard.h"

#include "hadamard_avx2.h"

#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

namespace quantc {
namespace {

// Quadratic character over GF(q) for q = p (prime) or q = p^2 (elements a + b*alpha, alpha^2 = r,
// r a non-residue mod p); element index = a + p*b.
struct Field {
  int p = 0, q = 0, r = 0;
  std::vector<int8_t> chi;  // chi[x] in {0, 1, -1}

  int add(int x, int y) const { return q == p ? (x + y) % p : ((x % p + y % p) % p) + p * ((x / p + y / p) % p); }
  int neg(int x) const { return q == p ? (p - x) % p : ((p - x % p) % p) + p * ((p - x / p) % p); }
  int mul(int x, int y) const {
    if (q == p) return (x * y) % p;
    int a = x % p, b = x / p, c = y % p, d = y / p;
    int re = (a * c + r * b % p * d) % p;
    int im = (a * d + b * c) % p;
    return re + p * im;
  }

  Field(int prime, int power) : p(prime), q(power == 1 ? prime : prime * prime) {
    if (power == 2) {
      for (r = 2; r < p; ++r) {  // smallest non-residue mod p
        bool square = false;
        for (int t = 1; t < p; ++t) square |= (t * t) % p == r;
        if (!square) break;
      }
    }
    chi.assign(q, -1);
    chi[0] = 0;
    for (int x = 1; x < q; ++x) chi[mul(x, x)] = 1;
  }
};

// Paley I: q = 3 mod 4, order q + 1.  H = I + S, S = [[0, 1^T], [-1, Q]], Q[i][j] = chi(j - i).
std::vector<int8_t> paley1(int q) {
  Field f(q, 1);
  int n = q + 1;
  std::vector<int8_t> h(n * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      int s;
      if (i == 0 && j == 0) s = 0;
      else if (i == 0) s = 1;
      else if (j == 0) s = -1;
      else s = f.chi[f.add(j - 1, f.neg(i - 1))];
      h[i * n + j] = static_cast<int8_t>(s + (i == j ? 1 : 0));
    }
  return h;
}

// Paley II: q = 1 mod 4 (prime or prime square), order 2(q + 1).  C = [[0, 1^T], [1, Q]] is a
// symmetric conference matrix; H = C (x) [[1, 1], [1, -1]] + I (x) [[1, -1], [-1, -1]].
std::vector<int8_t> paley2(int p, int power) {
  Field f(p, power);
  int q = f.q, c = q + 1, n = 2 * c;
  std::vector<int> conf(c * c);
  for (int i = 0; i < c; ++i)
    for (int j = 0; j < c; ++j)
      conf[i * c + j] = (i == 0 && j == 0) ? 0 : (i == 0 || j == 0) ? 1 : f.chi[f.add(j - 1, f.neg(i - 1))];
  const int a[2][2] = {{1, 1}, {1, -1}}, b[2][2] = {{1, -1}, {-1, -1}};
  std::vector<int8_t> h(n * n);
  for (int i = 0; i < c; ++i)
    for (int j = 0; j < c; ++j)
      for (int u = 0; u < 2; ++u)
        for (int v = 0; v < 2; ++v)
          h[(2 * i + u) * n + 2 * j + v] = static_cast<int8_t>(conf[i * c + j] * a[u][v] + (i == j ? b[u][v] : 0));
  return h;
}

// Sylvester doubling: [[H, H], [H, -H]].
std::vector<int8_t> doubled(const std::vector<int8_t>& h, int m) {
  int n = 2 * m;
  std::vector<int8_t> d(n * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      d[i * n + j] = static_cast<int8_t>(h[(i % m) * m + j % m] * ((i >= m && j >= m) ? -1 : 1));
  return d;
}

// Goethals-Seidel sequences: first rows of four circulants A, B, C, D of odd order w whose
// periodic autocorrelations sum to zero at every nonzero shift (so AA^T + BB^T + CC^T + DD^T = 4w I).
// Found by quantc's own tabu search and identical to Quantc.Core.Numerics.Hadamard's constants:
// `dotnet run -c Release --project tools/Quantc.Tools.HadamardSearch -- search 39 --seed 1` (and 43);
// `-- verify` re-checks them.
const char* const kGs39[4] = {
    "-+-----++-+-++++-++---+-+++++-----+-+--",
    "-----+-+---+---++-+--+--++-+-+--+++-+-+",
    "++-++-+------++-+--+++--+--++----+----+",
    "---++--+---++--+----+-----+++-++-+-+++-",
};
const char* const kGs43[4] = {
    "++-+-+-+---++----+++++--+-+++---++--+++-+--",
    "++------++-++++-+--+--++---+-+-++-----+---+",
    "++-++++++-+-+--+--+++++++--+--+-++--++--+++",
    "++-+-+-+-++++----+--+----+---++-++-+++++-+-",
};

// Goethals-Seidel array, R the back-identity (X R)[i][j] = X[i][w-1-j]:
// [[A, BR, CR, DR], [-BR, A, D^T R, -C^T R], [-CR, -D^T R, A, B^T R], [-DR, C^T R, -B^T R, A]].
std::vector<int8_t> goethals_seidel(const char* const rows[4]) {
  const int w = static_cast<int>(std::strlen(rows[0])), n = 4 * w;
  struct Block { int seq; bool t, r; int sign; };
  const Block blocks[4][4] = {
      {{0, false, false, 1}, {1, false, true, 1}, {2, false, true, 1}, {3, false, true, 1}},
      {{1, false, true, -1}, {0, false, false, 1}, {3, true, true, 1}, {2, true, true, -1}},
      {{2, false, true, -1}, {3, true, true, -1}, {0, false, false, 1}, {1, true, true, 1}},
      {{3, false, true, -1}, {2, true, true, 1}, {1, true, true, -1}, {0, false, false, 1}},
  };
  std::vector<int8_t> h(static_cast<size_t>(n) * n);
  for (int bi = 0; bi < 4; ++bi)
    for (int bj = 0; bj < 4; ++bj) {
      const Block& b = blocks[bi][bj];
      for (int i = 0; i < w; ++i)
        for (int j = 0; j < w; ++j) {
          int col = b.r ? w - 1 - j : j;
          int shift = b.t ? i - col : col - i;  // circulant X[i][c] = x[(c - i) mod w]
          int v = rows[b.seq][((shift % w) + w) % w] == '+' ? 1 : -1;
          h[(bi * w + i) * n + bj * w + j] = static_cast<int8_t>(b.sign * v);
        }
    }
  return h;
}

std::vector<int8_t> build(int m) {
  switch (m) {
    case 1: return {1};
    case 12: return paley1(11);
    case 20: return paley1(19);
    case 28: return paley2(13, 1);
    case 36: return paley2(17, 1);
    case 40: return doubled(paley1(19), 20);
    case 44: return paley1(43);
    case 52: return paley2(5, 2);
    case 60: return paley1(59);
    case 108: return paley1(107);
    case 140: return paley1(139);
    case 156: return goethals_seidel(kGs39);
    case 172: return goethals_seidel(kGs43);
    default: return {};
  }
}

}  // namespace

const std::vector<int>& hadamard_orders() {
  static const std::vector<int> orders = {12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 156, 172};
  return orders;
}

std::vector<int8_t> hadamard_matrix(int m) {
  static std::mutex mu;
  static std::unordered_map<int, std::vector<int8_t>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(m);
  if (it != cache.end()) return it->second;
  auto h = build(m);
  cache.emplace(m, h);
  return h;
}

bool hadamard_split(int64_t n, int64_t* pow2, int* m) {
  if (n <= 0) return false;
  if ((n & (n - 1)) == 0) { *pow2 = n; *m = 1; return true; }
  for (int order : hadamard_orders()) {
    if (n % order) continue;
    int64_t rest = n / order;
    if ((rest & (rest - 1)) == 0) { *pow2 = rest; *m = order; return true; }
  }
  return false;
}

namespace {

// In-place unnormalised Walsh-Hadamard transform (Sylvester order) of length n = 2^k.
void fwht(float* v, int64_t n) {
  for (int64_t h = 1; h < n; h <<= 1)
    for (int64_t i = 0; i < n; i += h << 1)
      for (int64_t j = i; j < i + h; ++j) {
        float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
}

}  // namespace

void hadamard_transform_rows(const float* x, float* y, int64_t rows, int64_t n, bool normalize, Isa isa) {
  int64_t p2;
  int m;
  if (!hadamard_split(n, &p2, &m))
    throw std::invalid_argument("Hadamard: size " + std::to_string(n) + " is not 2^k times a supported order");
  const float scale = normalize ? 1.0f / std::sqrt(static_cast<float>(n)) : 1.0f;
  std::vector<int8_t> hm = m > 1 ? hadamard_matrix(m) : std::vector<int8_t>{};
  std::vector<float> tmp(m > 1 ? n : 0);
  const bool vector_rows = isa != Isa::Reference && p2 >= 8;
  std::vector<uint32_t> sign(vector_rows ? hm.size() : 0);
  for (size_t i = 0; i < sign.size(); ++i) sign[i] = hm[i] < 0 ? 0x80000000u : 0u;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    if (yr != xr) std::copy(xr, xr + n, yr);
    if (vector_rows) {
      if (isa == Isa::Avx512Vnni) detail::hadamard_row_avx512(yr, p2, m, sign.data(), tmp.data(), scale, normalize);
      else detail::hadamard_row_avx2(yr, p2, m, sign.data(), tmp.data(), scale, normalize);
      continue;
    }
    // View the row as [m, 2^k]: transform each of the m sub-vectors, then mix them with H_m.
    for (int a = 0; a < m; ++a) fwht(yr + a * p2, p2);
    if (m > 1) {
      std::fill(tmp.begin(), tmp.end(), 0.0f);
      for (int a = 0; a < m; ++a)
        for (int c = 0; c < m; ++c) {
          const float s = hm[a * m + c];
          const float* src = yr + c * p2;
          float* dst = tmp.data() + a * p2;
          if (s > 0) for (int64_t b = 0; b < p2; ++b) dst[b] += src[b];
          else for (int64_t b = 0; b < p2; ++b) dst[b] -= src[b];
        }
      std::copy(tmp.begin(), tmp.end(), yr);
    }
    if (normalize)
      for (int64_t i = 0; i < n; ++i) yr[i] *= scale;
  }
}

void hadamard_transform(const float* x, float* y, int64_t rows, int64_t n, bool normalize) {
  int64_t p2;
  int m;
  if (!hadamard_split(n, &p2, &m) || rows <= 1) {
    hadamard_transform_rows(x, y, rows, n, normalize, best_isa());  // one row, or the size's error
    return;
  }
  const Isa isa = best_isa();
  auto chunk = [&](int64_t r0, int64_t r1) { hadamard_transform_rows(x + r0 * n, y + r0 * n, r1 - r0, n, normalize, isa); };
  using Chunk = decltype(chunk);
  parallel_for(rows, n * (m + 8), [](void* c, int64_t r0, int64_t r1) { (*static_cast<Chunk*>(c))(r0, r1); }, &chunk);
}

void hadamard_transform_reference(const float* x, float* y, int64_t rows, int64_t n, bool normalize) {
  int64_t p2;
  int m;
  if (!hadamard_split(n, &p2, &m))
    throw std::invalid_argument("Hadamard: size " + std::to_string(n) + " is not 2^k times a supported order");
  auto hm = hadamard_matrix(m);
  const double scale = normalize ? 1.0 / std::sqrt(static_cast<double>(n)) : 1.0;
  std::vector<float> out(n);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      int64_t a = i / p2, b = i % p2;
      double acc = 0;
      for (int64_t j = 0; j < n; ++j) {
        int64_t c = j / p2, d = j % p2;
        int sylvester = (__builtin_popcountll(static_cast<unsigned long long>(b & d)) & 1) ? -1 : 1;
        acc += static_cast<double>(hm[a * m + c] * sylvester) * x[r * n + j];
      }
      out[i] = static_cast<float>(acc * scale);
    }
    std::copy(out.begin(), out.end(), y + r * n);
  }
}

}  // namespace quantc
