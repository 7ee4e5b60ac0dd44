// Device queries shared by the CUDA kernels.
#include <cuda_runtime.h>

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

}  // namespace quantc::cuda
