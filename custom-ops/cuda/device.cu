// Device queries shared by the CUDA kernels.
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "quantc/cuda_ops.h"

namespace quantc::cuda {

int device_sm() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) return 0;
  return major * 10 + minor;
}

namespace {

// quantc's own stream-ordered pool per device: it keeps freed memory (release threshold: all), so scratch allocated and freed on
// every call is not handed back to the driver at each synchronization (the default pool's threshold is 0), and the default
// pool's settings, which other code on the device may rely on, are left alone.
cudaMemPool_t pool_of(int device) {
  static std::mutex mu;
  static std::vector<std::pair<int, cudaMemPool_t>> pools;
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& p : pools)
    if (p.first == device) return p.second;
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t pool = nullptr;
  if (cudaMemPoolCreate(&pool, &props) != cudaSuccess) return nullptr;
  uint64_t keep = UINT64_MAX;
  cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
  pools.emplace_back(device, pool);
  return pool;
}

}  // namespace

int scratch_alloc(void** p, size_t bytes, void* stream) {
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (cudaMemPool_t pool = pool_of(device)) return cudaMallocFromPoolAsync(p, bytes, pool, st);
  return cudaMallocAsync(p, bytes, st);
}

int scratch_free(void* p, void* stream) { return p ? cudaFreeAsync(p, static_cast<cudaStream_t>(stream)) : cudaSuccess; }

}  // namespace quantc::cuda
