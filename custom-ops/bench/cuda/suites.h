// The harness's suites (each pushes its rows to qcb::rows()); main.cu measures the ceilings and prints the table.
#pragma once
#include "common.cuh"

namespace qcb {
// True when QC_QUICK=1: small shapes and few repetitions (a correctness smoke run).
bool quick();
// MatMulInt8, MatMulInt4Int8 (int8 and float A), MatMulInt4Fp8 against the CPU kernels; cuBLAS fp16 / cuBLASLt int8 peers.
void gemm_suite(const Peaks& peaks);
// QSelectiveScan, QCausalConv1d against the CPU kernels; a float selective scan as the peer.
void mamba_suite(const Peaks& peaks);
// Hadamard and HadamardQuantizeInt8 against the CPU kernels; the copy bandwidth as the ceiling.
void hadamard_suite(const Peaks& peaks);
// MatMulInt8 and MatMulInt4Fp8 through cuBLASLt (cuda/lt.cu) against the CPU kernels and cuBLAS fp16.
void lt_suite(const Peaks& peaks);
// cuBLAS fp16 GEMM y[M,N] = a[M,K] · b[N,K]^T (fp16 in and out, fp32 compute), median ms, for the peers' columns.
double cublas_fp16_ms(int64_t M, int64_t N, int64_t K);
// cuBLASLt int8 x int8 -> int32 GEMM on the same shape, median ms; -1 where cuBLASLt offers no int8 algorithm for it.
double cublaslt_int8_ms(int64_t M, int64_t N, int64_t K);
}  // namespace qcb
