// The harness's Mamba and Hadamard suites (custom-ops/bench/cuda/bench_mamba.cu) in QC_QUICK shapes with the kernels on
// CPU threads (cuda_runtime.h here): the suites' buffers, poisoning, checks and table rows, without a GPU. Exit 1 when a
// check fails. `cmake --build BUILD --target quantc_cuda_bench_emulation && BUILD/quantc_cuda_bench_emulation`
#include "cuda_runtime.h"  // first: the stand-in

#include "../../bench/cuda/bench_mamba.cu"
#include "../../cuda/hadamard.cu"
#include "../../cuda/mamba.cu"

namespace qcb {
bool quick() { return true; }
}  // namespace qcb

int main() {
  qcb::Peaks peaks;
  peaks.copy_gbs = 1;
  qcb::mamba_suite(peaks);
  qcb::hadamard_suite(peaks);
  bool ok = true;
  for (const qcb::Row& r : qcb::rows()) ok &= r.ok;
  std::printf("%zu rows, %s\n", qcb::rows().size(), ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
