// The harness's Mamba and Hadamard suites: QSelectiveScan, QCausalConv1d, Hadamard and HadamardQuantizeInt8 on the
// GPU against the CPU kernels (the full outputs, the CPU reference on every thread), timed with rotating input sets;
// the float selective scan (the same kernel on float inputs) is the scan's peer.
#include <stdexcept>

#include "quantc/cuda_ops.h"
#include "quantc/hadamard.h"
#include "quantc/mamba.h"
#include "quantc/quantize.h"
#include "suites.h"

namespace qcb {
namespace {

namespace qc = quantc::cuda;

int warmups() { return quick() ? 2 : 10; }
int reps() { return quick() ? 5 : 30; }

void emit(Row r) {
  std::printf("%-24s %-34s %-52s %9.4f ms %8.1f %s %4.0f%%", r.kernel.c_str(), r.shape.c_str(), r.check.c_str(), r.ms, r.rate,
              r.unit.c_str(), 100 * r.peak_frac);
  if (!r.peer.empty()) std::printf("  %.2fx %s", r.vs, r.peer.c_str());
  std::printf("\n");
  std::fflush(stdout);
  rows().push_back(std::move(r));
}

// `sets` device copies of one host vector (set 0 uploaded, the others copied on the device: same values, other addresses).
template <typename T>
std::vector<Dev<T>> replicate(const std::vector<T>& h, int sets) {
  std::vector<Dev<T>> v;
  for (int s = 0; s < sets; ++s) {
    v.emplace_back(h.size());
    if (s == 0) v[0].upload(h);
    else QC_CHECK(cudaMemcpy(v[s].p, v[0].p, h.size() * sizeof(T), cudaMemcpyDeviceToDevice));
  }
  return v;
}

// int8 outputs: counts of elements off by exactly 1 and by more; pass when none is off by more than 1 and at most
// 4 + 1e-4 of them by 1 (values at a rounding boundary where the float result differs in its last bit).
struct I8Diff {
  long long one = 0, more = 0;
  size_t total = 0;
  bool ok() const { return more == 0 && one <= 4 + static_cast<long long>(total / 10000); }
  std::string text(const char* name) const {
    char b[128];
    std::snprintf(b, sizeof b, "%s %lld/%zu off by 1%s", name, one, total, more ? (", " + std::to_string(more) + " by more").c_str() : "");
    return b;
  }
};
I8Diff i8_diff(const std::vector<int8_t>& got, const std::vector<int8_t>& ref) {
  I8Diff d;
  d.total = ref.size();
  if (got.size() != ref.size()) { d.more = 1; return d; }
  for (size_t i = 0; i < got.size(); ++i) {
    const int e = std::abs(int(got[i]) - int(ref[i]));
    d.one += e == 1;
    d.more += e > 1;
  }
  return d;
}

std::string fmt_rel(const char* name, double r) {
  char b[64];
  std::snprintf(b, sizeof b, "%s %.1e", name, r);
  return b;
}

// Appends one check to a row: passes when `pass`, else marks the row failed.
void add_check(Row& row, const std::string& text, bool pass) {
  if (!pass && row.ok) row.check = "FAIL " + row.check;
  row.ok &= pass;
  row.check += (row.check.empty() || row.check == "FAIL " ? "" : ", ") + text;
}

const double kRelTol = 1e-5;

// --- QSelectiveScan

struct ScanCase {
  int64_t batch, length, dim, state;
  bool with_h, with_yq;
};

struct ScanHost {
  ScanCase c;
  std::vector<int8_t> x, dt, z, B, C;
  std::vector<float> dt_bias, A, D, h0;
  float xs = 0.02f, dts = 1.2f / 127, Bs = 0.02f, Cs = 0.02f, zs = 0.03f, ys = 1;
  std::vector<float> y, h_out;  // the CPU reference
  std::vector<int8_t> y_q;
  explicit ScanHost(const ScanCase& sc) : c(sc) {
    const size_t bld = size_t(c.batch * c.length * c.dim), bln = size_t(c.batch * c.length * c.state);
    x = rand_i8(bld, -128, 127);
    dt = rand_i8(bld, -128, 127);
    z = rand_i8(bld, -128, 127);
    B = rand_i8(bln, -128, 127);
    C = rand_i8(bln, -128, 127);
    dt_bias = rand_f32(size_t(c.dim), -5.5f, -3.5f);  // softplus(dt * dt_scale + dt_bias) spans ~0.001 .. 0.1
    A = rand_f32(size_t(c.dim * c.state), 0.f, 2.f);
    for (float& a : A) a = -std::exp(a);
    D = rand_f32(size_t(c.dim), 0.5f, 1.5f);
    if (c.with_h) h0 = rand_f32(size_t(c.batch * c.dim * c.state));
    y.resize(bld);
    if (c.with_h) h_out.resize(h0.size());
    quantc::ScanArgs a;
    a.batch = c.batch; a.length = c.length; a.dim = c.dim; a.state = c.state;
    a.x = x.data(); a.x_scale = xs; a.dt = dt.data(); a.dt_scale = dts; a.dt_bias = dt_bias.data(); a.A = A.data();
    a.B = B.data(); a.B_scale = Bs; a.C = C.data(); a.C_scale = Cs; a.D = D.data(); a.z = z.data(); a.z_scale = zs;
    a.h0 = c.with_h ? h0.data() : nullptr; a.y = y.data(); a.h_out = c.with_h ? h_out.data() : nullptr;
    quantc::selective_scan_int8(a, quantc::Isa::Reference);
    if (c.with_yq) {
      float m = 0;
      for (float v : y) m = std::max(m, std::fabs(v));
      ys = std::max(m, 1e-6f) / 100.f;  // a few of the largest saturate
      y_q.resize(bld);
      quantc::quantize_int8(y.data(), int64_t(bld), ys, y_q.data(), quantc::Isa::Reference);
    }
  }
  std::string shape() const {
    char b[160];
    std::snprintf(b, sizeof b, "B%lld L%lld D%lld N%lld%s%s", (long long)c.batch, (long long)c.length, (long long)c.dim, (long long)c.state,
                  c.with_h ? " h0,h_out" : "", c.with_yq ? " y_q" : "");
    return b;
  }
  // Bytes read once and written once (int8 activations and y_q, or float activations and no y_q).
  double bytes(size_t act) const {
    const double bld = double(c.batch * c.length * c.dim), bln = double(c.batch * c.length * c.state);
    double r = act * (3 * bld + 2 * bln) + 4.0 * (c.dim * c.state + 2 * c.dim) + 4 * bld;
    if (c.with_h) r += 2 * 4.0 * c.batch * c.dim * c.state;
    if (c.with_yq && act == 1) r += bld;
    return r;
  }
};

// The checked run and the timing of the int8 scan; returns its median ms (the row is emitted by the caller).
double run_scan_int8(const ScanHost& h, Row& row, int lanes) {
  const ScanCase& c = h.c;
  const int sets = sets_for(size_t(h.bytes(1)));
  auto x = replicate(h.x, sets), dt = replicate(h.dt, sets), z = replicate(h.z, sets), B = replicate(h.B, sets), C = replicate(h.C, sets);
  std::vector<Dev<float>> h0;
  if (c.with_h) h0 = replicate(h.h0, sets);
  Dev<float> dt_bias(h.dt_bias), A(h.A), D(h.D), y(h.y.size()), h_out(h.h_out.size());
  Dev<int8_t> y_q(h.y_q.size());
  Dev<float> scales(std::vector<float>{h.xs, h.dts, h.Bs, h.Cs, h.zs, h.ys});
  qc::ScanArgsCuda a;
  a.batch = c.batch; a.length = c.length; a.dim = c.dim; a.state = c.state; a.lanes = lanes;
  a.dt_bias = dt_bias.p; a.A = A.p; a.D = D.p; a.y = y.p;
  a.h_out = c.with_h ? h_out.p : nullptr;
  a.y_q = c.with_yq ? y_q.p : nullptr;
  a.s = {scales.p, scales.p + 1, scales.p + 2, scales.p + 3, scales.p + 4, scales.p + 5};
  auto set = [&](int s) {
    a.x = x[s].p; a.dt = dt[s].p; a.z = z[s].p; a.B = B[s].p; a.C = C[s].p;
    a.h0 = c.with_h ? h0[s].p : nullptr;
  };
  y.poison();
  h_out.poison();
  y_q.poison();
  set(0);
  QC_LAUNCH(qc::selective_scan_int8(a, nullptr));
  QC_CHECK(cudaDeviceSynchronize());
  const double ry = rel_err(y.download(), h.y);
  add_check(row, fmt_rel("rel y", ry), ry < kRelTol);
  if (c.with_h) {
    const double rh = rel_err(h_out.download(), h.h_out);
    add_check(row, fmt_rel("h_out", rh), rh < kRelTol);
  }
  if (c.with_yq) {
    const I8Diff d = i8_diff(y_q.download(), h.y_q);
    add_check(row, d.text("y_q"), d.ok());
  }
  return time_ms([&](int s) { set(s); QC_LAUNCH(qc::selective_scan_int8(a, nullptr)); }, sets, warmups(), reps());
}

// The float scan on the dequantized inputs (what the unquantized model runs): checked against the same CPU reference
// (its roundings differ only in where B_scale is applied), timed the same way.
double run_scan_f32(const ScanHost& h, Row& row, int lanes) {
  const ScanCase& c = h.c;
  auto deq = [](const std::vector<int8_t>& v, float s) {
    std::vector<float> f(v.size());
    for (size_t i = 0; i < v.size(); ++i) f[i] = v[i] * s;
    return f;
  };
  std::vector<float> xf = deq(h.x, h.xs), zf = deq(h.z, h.zs), Bf = deq(h.B, h.Bs), Cf = deq(h.C, 1.f), dtf = deq(h.dt, h.dts);
  for (float& v : Cf) v *= h.Cs;
  const int sets = sets_for(size_t(h.bytes(4)));
  auto x = replicate(xf, sets), dt = replicate(dtf, sets), z = replicate(zf, sets), B = replicate(Bf, sets), C = replicate(Cf, sets);
  std::vector<Dev<float>> h0;
  if (c.with_h) h0 = replicate(h.h0, sets);
  Dev<float> dt_bias(h.dt_bias), A(h.A), D(h.D), y(h.y.size()), h_out(h.h_out.size());
  qc::ScanArgsF32 a;
  a.batch = c.batch; a.length = c.length; a.dim = c.dim; a.state = c.state; a.lanes = lanes;
  a.dt_bias = dt_bias.p; a.A = A.p; a.D = D.p; a.y = y.p;
  a.h_out = c.with_h ? h_out.p : nullptr;
  auto set = [&](int s) {
    a.x = x[s].p; a.dt = dt[s].p; a.z = z[s].p; a.B = B[s].p; a.C = C[s].p;
    a.h0 = c.with_h ? h0[s].p : nullptr;
  };
  y.poison();
  h_out.poison();
  set(0);
  QC_LAUNCH(qc::selective_scan_f32(a, nullptr));
  QC_CHECK(cudaDeviceSynchronize());
  const double ry = rel_err(y.download(), h.y);
  add_check(row, fmt_rel("rel y", ry), ry < kRelTol);
  if (c.with_h) {
    const double rh = rel_err(h_out.download(), h.h_out);
    add_check(row, fmt_rel("h_out", rh), rh < kRelTol);
  }
  return time_ms([&](int s) { set(s); QC_LAUNCH(qc::selective_scan_f32(a, nullptr)); }, sets, warmups(), reps());
}

// The int8 scan and its float peer with `lanes` lanes per channel (8, the default, and 4 where `both`).
void scan_rows(const Peaks& peaks, const ScanCase& sc, bool both) {
  const ScanHost h(sc);
  for (int lanes : {8, 4}) {
    if (lanes == 4 && !both) break;
    const std::string shape = h.shape() + (lanes == 8 ? "" : " lanes 4");
    Row f{"SelectiveScan f32 (peer)", shape};
    f.ms = run_scan_f32(h, f, lanes);
    f.unit = "GB/s";
    f.rate = h.bytes(4) / (f.ms * 1e-3) / 1e9;
    f.peak_frac = f.rate / peaks.copy_gbs;
    Row r{"QSelectiveScan", shape};
    r.ms = run_scan_int8(h, r, lanes);
    r.unit = "GB/s";
    r.rate = h.bytes(1) / (r.ms * 1e-3) / 1e9;
    r.peak_frac = r.rate / peaks.copy_gbs;
    r.vs = f.ms / r.ms;
    r.peer = "float scan";
    emit(std::move(r));
    emit(std::move(f));
  }
}

// --- QCausalConv1d

void conv_row(const Peaks& peaks, int64_t batch, int64_t length, int64_t dim, int64_t K) {
  const size_t bld = size_t(batch * length * dim), st = size_t(batch * dim * (K - 1));
  const std::vector<int8_t> x = rand_i8(bld, -128, 127);
  const std::vector<float> w = rand_f32(size_t(dim * K), -0.5f, 0.5f), bias = rand_f32(size_t(dim)), state = rand_f32(st, -2.f, 2.f);
  const float xs = 0.02f;
  std::vector<float> y_ref(bld), st_ref(st);
  quantc::ConvArgs ca;
  ca.batch = batch; ca.length = length; ca.dim = dim; ca.kernel = K; ca.x = x.data(); ca.x_scale = xs; ca.weight = w.data();
  ca.bias = bias.data(); ca.state_in = state.data(); ca.silu = true; ca.y = y_ref.data(); ca.state_out = st_ref.data();
  quantc::causal_conv1d_int8(ca, quantc::Isa::Reference);

  char shape[128];
  std::snprintf(shape, sizeof shape, "B%lld L%lld D%lld K%lld state,bias,silu", (long long)batch, (long long)length, (long long)dim,
                (long long)K);
  Row r{"QCausalConv1d", shape};
  const double bytes = double(bld) * (1 + 4) + 4.0 * (dim * K + dim) + 2 * 4.0 * st;
  const int sets = sets_for(size_t(double(bld) + 4.0 * st));
  auto xd = replicate(x, sets);
  auto sd = replicate(state, sets);
  Dev<float> wd(w), bd(bias), y(bld), so(st), xsd(std::vector<float>{xs});
  qc::ConvArgsCuda a;
  a.batch = batch; a.length = length; a.dim = dim; a.kernel = K; a.silu = true; a.x_scale = xsd.p; a.weight = wd.p; a.bias = bd.p;
  a.y = y.p; a.state_out = so.p;
  auto set = [&](int s) { a.x = xd[s].p; a.state_in = sd[s].p; };
  y.poison();
  so.poison();
  set(0);
  QC_LAUNCH(qc::causal_conv1d_int8(a, nullptr));
  QC_CHECK(cudaDeviceSynchronize());
  const double ry = rel_err(y.download(), y_ref), rs = rel_err(so.download(), st_ref);
  add_check(r, fmt_rel("rel y", ry), ry < kRelTol);
  add_check(r, fmt_rel("state_out", rs), rs < kRelTol);
  r.ms = time_ms([&](int s) { set(s); QC_LAUNCH(qc::causal_conv1d_int8(a, nullptr)); }, sets, warmups(), reps());
  r.unit = "GB/s";
  r.rate = bytes / (r.ms * 1e-3) / 1e9;
  r.peak_frac = r.rate / peaks.copy_gbs;
  emit(std::move(r));
}

// --- Hadamard

std::string bits_text(long long diffs) { return std::to_string(diffs) + " bit diffs"; }

// Hadamard (float) or HadamardQuantizeInt8 (quant) on rows x n, against the CPU kernel, timed.
void hadamard_row(const Peaks& peaks, int64_t rows_n, int64_t n, bool quant) {
  const size_t count = size_t(rows_n * n);
  const std::vector<float> x = rand_f32(count, -2.f, 2.f);
  const float qscale = 4.f / 127;  // |H x / sqrt(n)| ~ 1.15 rms: a few saturate
  std::vector<float> y_ref(quant ? 0 : count);
  std::vector<int8_t> q_ref(quant ? count : 0);
  if (quant) quantc::hadamard_quantize_int8(x.data(), q_ref.data(), rows_n, n, qscale);
  else quantc::hadamard_transform(x.data(), y_ref.data(), rows_n, n, true);

  char shape[96];
  std::snprintf(shape, sizeof shape, "%lld x %lld", (long long)rows_n, (long long)n);
  Row r{quant ? "HadamardQuantizeInt8" : "Hadamard", shape};
  const int sets = sets_for(count * 4);
  auto xd = replicate(x, sets);
  Dev<float> y(quant ? 0 : count), sd(std::vector<float>{qscale});
  Dev<int8_t> q(quant ? count : 0);
  auto call = [&](int s) {
    if (quant) QC_LAUNCH(qc::hadamard_quantize_int8(xd[s].p, sd.p, q.p, rows_n, n, nullptr));
    else QC_LAUNCH(qc::hadamard(xd[s].p, y.p, rows_n, n, true, nullptr));
  };
  y.poison();
  q.poison();
  call(0);
  QC_CHECK(cudaDeviceSynchronize());
  if (quant) {
    const I8Diff d = i8_diff(q.download(), q_ref);
    add_check(r, d.text("int8"), d.ok());
  } else {
    const std::vector<float> got = y.download();
    const double re = rel_err(got, y_ref);
    add_check(r, fmt_rel("rel", re) + ", " + bits_text(bit_diffs(got, y_ref)), re < kRelTol);
  }
  r.ms = time_ms(call, sets, warmups(), reps());
  r.unit = "GB/s";
  r.rate = double(count) * (4 + (quant ? 1 : 4)) / (r.ms * 1e-3) / 1e9;
  r.peak_frac = r.rate / peaks.copy_gbs;
  emit(std::move(r));
}

// Every supported H_m (and powers of two), in place and not normalized too, a few rows each; untimed. Also checks that
// a row over the shared memory throws std::invalid_argument.
void hadamard_sizes_row() {
  Row r{"Hadamard sizes", "3 rows, in place, every m"};
  std::vector<int64_t> sizes = {1, 2, 64, 1024, 8192, 5120, 11008, 32768};  // 32768: 128 KB, over the default 48 KB
  int shift = 0;
  for (int m : quantc::hadamard_orders()) {
    sizes.push_back(m);
    sizes.push_back(int64_t(m) << (shift++ % 6 + 1));  // m x 2 .. m x 64
  }
  double worst = 0;
  long long diffs = 0;
  for (int64_t n : sizes)
    for (bool normalize : {true, false}) {
      const int64_t rows_n = 3;
      const std::vector<float> x = rand_f32(size_t(rows_n * n));
      std::vector<float> ref(x.size());
      quantc::hadamard_transform(x.data(), ref.data(), rows_n, n, normalize);
      Dev<float> d(x);
      QC_LAUNCH(qc::hadamard(d.p, d.p, rows_n, n, normalize, nullptr));
      const std::vector<float> got = d.download();
      worst = std::max(worst, rel_err(got, ref));
      diffs += bit_diffs(got, ref);
    }
  add_check(r, std::to_string(sizes.size() * 2) + " sizes: worst " + fmt_rel("rel", worst) + ", " + bits_text(diffs), worst < kRelTol);
  bool threw = false;
  try {
    Dev<float> big(size_t(1) << 17);
    (void)qc::hadamard(big.p, big.p, 1, int64_t(1) << 17, true, nullptr);
  } catch (const std::invalid_argument& e) {
    threw = true;
    std::printf("  (expected) %s\n", e.what());
  }
  add_check(r, threw ? "n=2^17 throws" : "n=2^17 did not throw", threw);
  r.unit = "GB/s";
  emit(std::move(r));
}

}  // namespace

void mamba_suite(const Peaks& peaks) {
  // The conv first (the simplest kernel), then the scan: decode shapes, then prefill.
  if (quick()) {
    conv_row(peaks, 2, 64, 256, 4);
    conv_row(peaks, 2, 1, 256, 4);
    scan_rows(peaks, {2, 1, 256, 16, true, false}, true);
    scan_rows(peaks, {1, 64, 256, 16, true, true}, true);
    scan_rows(peaks, {1, 40, 100, 5, true, true}, true);  // ragged: dim and state not multiples of the tiles
    scan_rows(peaks, {2, 37, 64, 64, true, true}, true);  // the widest state
    return;
  }
  conv_row(peaks, 1, 2048, 5120, 4);
  conv_row(peaks, 8, 1, 5120, 4);
  scan_rows(peaks, {1, 1, 5120, 16, true, false}, false);
  scan_rows(peaks, {8, 1, 5120, 16, true, false}, false);
  scan_rows(peaks, {1, 40, 100, 5, true, true}, true);
  scan_rows(peaks, {2, 37, 64, 64, true, true}, true);
  scan_rows(peaks, {1, 512, 5120, 16, false, false}, true);
  scan_rows(peaks, {1, 2048, 5120, 16, false, true}, true);
}

void hadamard_suite(const Peaks& peaks) {
  if (quick()) {
    hadamard_row(peaks, 1, 4096, false);
    hadamard_row(peaks, 16, 4096, false);
    hadamard_row(peaks, 16, 11008, false);
    hadamard_row(peaks, 16, 4096, true);
    hadamard_sizes_row();
    return;
  }
  hadamard_row(peaks, 1, 4096, false);
  hadamard_row(peaks, 2048, 4096, false);
  hadamard_row(peaks, 2048, 4096, true);
  hadamard_row(peaks, 2048, 5120, false);
  hadamard_row(peaks, 2048, 11008, false);
  hadamard_sizes_row();
}

}  // namespace qcb
