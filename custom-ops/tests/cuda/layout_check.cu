// Host check of the CUDA tile GEMMs' data layout (no GPU needed): one k-tile goes through the loaders' chunk assignment and
// swizzle, the ldmatrix.x4 lane addresses and the mma.sync fragment layouts (emulated from the PTX ISA's definitions), the
// int4 nibble unpacking and the accumulator-to-output mapping of cuda/gemm_common.cuh, and must equal the plain product;
// also that every ldmatrix phase is free of shared-memory bank conflicts. Exit 0 when all hold.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../../cuda/gemm_common.cuh"

using namespace quantc::cuda::gemm;

namespace {

uint32_t g_state = 12345;
int rand_in(int lo, int hi) {
  g_state = g_state * 1664525u + 1013904223u;
  return lo + int((g_state >> 8) % uint32_t(hi - lo + 1));
}

// ldmatrix.x4: lane L receives, from matrix q, 32-bit word L % 4 of row L / 4; row r of matrix q is at the address of lane 8q + r.
template <class Off>
void ldmatrix(const uint8_t* tile, Off off, uint32_t out[32][4]) {
  for (int L = 0; L < 32; ++L)
    for (int q = 0; q < 4; ++q) std::memcpy(&out[L][q], tile + off(8 * q + (L >> 2)) + 4 * (L & 3), 4);
}

// One warp's fragments for one k-step: a[i][lane][0..3] of m16 tile i, b[j][lane][0..1] of n8 tile j.
struct Frags {
  uint32_t a[4][32][4];
  uint32_t b[4][32][2];
};

void b_pairs(const uint32_t t[32][4], int j, Frags& f) {
  for (int L = 0; L < 32; ++L) {
    f.b[j][L][0] = t[L][0];
    f.b[j][L][1] = t[L][1];
    f.b[j + 1][L][0] = t[L][2];
    f.b[j + 1][L][1] = t[L][3];
  }
}

// Element x of a register holding 32 / bits signed values.
long elem(uint32_t w, int x, int bits) {
  const uint32_t v = (w >> (bits * x)) & ((1u << bits) - 1);
  return bits == 8 ? long(int8_t(v)) : long(int16_t(v));
}

// mma.sync m16n8kK (K = 32 for s8, 16 for f16): a_r of lane L holds row g + 8 (r & 1), k = (r >> 1) K / 2 + E t + x; b_r holds
// k = r K / 2 + E t + x of column g (g = L / 4, t = L % 4, E = values per register);
// d0..d3 = C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1].
void mma(const Frags& f, int bits, long acc[32][4][4][4]) {
  const int E = 32 / bits, K = 8 * E;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      long Am[16][32] = {}, Bm[32][8] = {}, C[16][8] = {};
      for (int L = 0; L < 32; ++L) {
        const int g = L >> 2, t = L & 3;
        for (int x = 0; x < E; ++x) {
          for (int r = 0; r < 4; ++r) Am[g + 8 * (r & 1)][(r >> 1) * K / 2 + E * t + x] = elem(f.a[i][L][r], x, bits);
          for (int r = 0; r < 2; ++r) Bm[r * K / 2 + E * t + x][g] = elem(f.b[j][L][r], x, bits);
        }
      }
      for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 8; ++c)
          for (int k = 0; k < K; ++k) C[r][c] += Am[r][k] * Bm[k][c];
      for (int L = 0; L < 32; ++L) {
        const int g = L >> 2, t = L & 3;
        for (int q = 0; q < 4; ++q) acc[L][i][j][q] += C[g + 8 * (q >> 1)][2 * t + (q & 1)];
      }
    }
}

// Sign-extends the low or high nibbles of a word's four bytes (the plain way, to check nib_lo / nib_hi's SWAR form's layout).
uint32_t nibbles(uint32_t w, bool high) {
  uint32_t o = 0;
  for (int x = 0; x < 4; ++x) {
    int v = (w >> (8 * x + (high ? 4 : 0))) & 0xF;
    o |= uint32_t(uint8_t(int8_t(v >= 8 ? v - 16 : v))) << (8 * x);
  }
  return o;
}

enum class Kind { Int8, Int4, Fp16 };

// The block's 128 x 128 outputs of one k-tile of A [128][KT] and B [128][KT] (KT = 64 values; 32 for fp16), through the kernels' layout.
int check(Kind kind) {
  const int KT = kind == Kind::Fp16 ? 32 : 64, bits = kind == Kind::Fp16 ? 16 : 8;
  std::vector<long> A(128 * KT), B(128 * KT), ref(128 * 128, 0), got(128 * 128, 0);
  std::vector<int> hits(128 * 128, 0);
  for (auto& v : A) v = kind == Kind::Fp16 ? rand_in(-60, 60) : rand_in(-128, 127);
  for (auto& v : B) v = kind == Kind::Int4 ? rand_in(-8, 7) : kind == Kind::Fp16 ? rand_in(-60, 60) : rand_in(-128, 127);
  for (int m = 0; m < 128; ++m)
    for (int n = 0; n < 128; ++n)
      for (int k = 0; k < KT; ++k) ref[m * 128 + n] += A[m * KT + k] * B[n * KT + k];
  // Row-major bytes of A and B as the kernels read them from global memory (fp16 values as 16-bit integers: the layout is the test).
  auto bytes_of = [&](const std::vector<long>& v) {
    std::vector<uint8_t> out(v.size() * bits / 8);
    for (size_t i = 0; i < v.size(); ++i)
      if (bits == 8) out[i] = uint8_t(int8_t(v[i]));
      else { const uint16_t h = uint16_t(int16_t(v[i])); std::memcpy(&out[2 * i], &h, 2); }
    return out;
  };
  const std::vector<uint8_t> ga = bytes_of(A), gb = bytes_of(B);
  std::vector<uint8_t> sa(kTileBytes), sb(kTileBytes), packed(128 * 32);
  std::vector<int> cover(512, 0);
  for (int tid = 0; tid < kThreads; ++tid) {
    for (int i = 0; i < 2; ++i) {  // load_tile_*: A (and int8 B) by 16-byte chunks
      const int r = load_row(tid, i), c = load_chunk(tid, i);
      cover[r * 4 + c]++;
      std::memcpy(&sa[swz(r, c)], &ga[r * 64 + 16 * c], 16);
      if (kind == Kind::Int8) std::memcpy(&sb[swz(r, c)], &gb[r * 64 + 16 * c], 16);
    }
    const int r = tid >> 1, h = tid & 1;
    if (kind == Kind::Int4) {  // the chunked int4 layout: byte j holds k = j (low nibble) and k = 32 + j (high); 2 chunks a row
      for (int j = 16 * h; j < 16 * h + 16; ++j) packed[r * 32 + j] = uint8_t((B[r * 64 + j] & 0xF) | ((B[r * 64 + 32 + j] & 0xF) << 4));
      std::memcpy(&sb[swz32(r, h)], &packed[r * 32 + 16 * h], 16);
    } else if (kind == Kind::Fp16) {  // store_weight: 16 k's of row r into chunks 2h, 2h + 1
      std::memcpy(&sb[swz(r, 2 * h)], &gb[r * 64 + 32 * h], 16);
      std::memcpy(&sb[swz(r, 2 * h + 1)], &gb[r * 64 + 32 * h + 16], 16);
    }
  }
  int bad = 0;
  for (int c : cover) bad += c != 1;
  for (int warp = 0; warp < 8; ++warp) {
    const int row0 = (warp >> 2) * 64, col0 = (warp & 3) * 32;
    static long acc[32][4][4][4];
    std::memset(acc, 0, sizeof acc);
    Frags pw{};
    uint32_t t[32][4];
    if (kind == Kind::Int4)
      for (int j = 0; j < 4; j += 2) {
        ldmatrix(sb.data(), [&](int L) { return w4_frag_offset(col0, j, L); }, t);
        b_pairs(t, j, pw);
      }
    for (int ks = 0; ks < 2; ++ks) {
      Frags f{};
      for (int i = 0; i < 4; ++i) ldmatrix(sa.data(), [&](int L) { return a_frag_offset(row0, i, ks, L); }, f.a[i]);
      for (int j = 0; j < 4; j += 2) {
        if (kind == Kind::Int4) break;
        ldmatrix(sb.data(), [&](int L) { return b_frag_offset(col0, j, ks, L); }, t);
        b_pairs(t, j, f);
      }
      if (kind == Kind::Int4)
        for (int j = 0; j < 4; ++j)
          for (int L = 0; L < 32; ++L)
            for (int r = 0; r < 2; ++r) f.b[j][L][r] = nibbles(pw.b[j][L][r], ks == 1);
      mma(f, bits, acc);
    }
    for (int L = 0; L < 32; ++L)
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j)
          for (int q = 0; q < 4; ++q) {
            const int m = row0 + acc_row(L, i, q), n = col0 + acc_col(L, j, q);
            got[m * 128 + n] = acc[L][i][j][q];
            hits[m * 128 + n]++;
          }
  }
  for (int i = 0; i < 128 * 128; ++i) bad += got[i] != ref[i] || hits[i] != 1;
  return bad;
}

// Bank conflicts of the ldmatrix phases: 8 rows of 16 bytes must fall in 8 distinct 16-byte slots of a 128-byte line.
int conflicts() {
  int bad = 0;
  auto phases = [&](auto off) {
    for (int q = 0; q < 4; ++q) {
      unsigned seen = 0;
      for (int r = 0; r < 8; ++r) seen |= 1u << ((off(8 * q + r) % 128) / 16);
      bad += seen != 0xFFu;
    }
  };
  for (int row0 : {0, 64})
    for (int i = 0; i < 4; ++i)
      for (int ks = 0; ks < 2; ++ks) phases([&](int L) { return a_frag_offset(row0, i, ks, L); });
  for (int col0 : {0, 32, 64, 96})
    for (int j : {0, 2}) {
      for (int ks = 0; ks < 2; ++ks) phases([&](int L) { return b_frag_offset(col0, j, ks, L); });
      phases([&](int L) { return w4_frag_offset(col0, j, L); });
    }
  return bad;
}

}  // namespace

int main() {
  const int i8 = check(Kind::Int8), i4 = check(Kind::Int4), f16 = check(Kind::Fp16), bank = conflicts();
  std::printf("tile layout: int8 %d, int4 %d, fp16 %d wrong outputs; %d ldmatrix phases with bank conflicts\n", i8, i4, f16, bank);
  return i8 || i4 || f16 || bank ? 1 : 0;
}
