// cuda_device_count() for builds that found CUDA: the runtime API only (never the driver stub).
// Without a driver, cudaGetDeviceCount returns cudaErrorInsufficientDriver and leaves the count
// untouched, so the count starts at 0 and any error means "no usable GPU".
#include "gpu/copy_engine.hpp"

#include <cuda_runtime_api.h>

namespace kvferry::gpu {

int cuda_device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // reset the last-error state so later runtime calls do not see it
    return 0;
  }
  return count < 0 ? 0 : count;
}

}  // namespace kvferry::gpu
