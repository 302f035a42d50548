// cuda_device_count() for builds without CUDA: there is never a usable device.
#include "gpu/copy_engine.hpp"

namespace kvferry::gpu {

int cuda_device_count() noexcept { return 0; }

}  // namespace kvferry::gpu
