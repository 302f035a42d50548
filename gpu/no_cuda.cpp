// The CUDA entry points of copy_engine.hpp for builds without CUDA: there is never a usable
// device, no CUDA engine and nothing to pin, and every call says so.
#include "gpu/copy_engine.hpp"
#include "gpu/device_buffer.hpp"

namespace kvferry::gpu {

namespace {

constexpr const char* no_cuda = "this build has no CUDA";

}  // namespace

int cuda_device_count() noexcept { return 0; }

std::unique_ptr<copy_engine> make_cuda_copy_engine(int device, std::string* error) {
  if (error) *error = std::string("CUDA copy engine for device ") + std::to_string(device) + ": " +
                      no_cuda;
  return nullptr;
}

std::unique_ptr<device_buffer> make_cuda_buffer(int device, std::size_t, std::string* error) {
  if (error) *error = std::string("device memory on cuda:") + std::to_string(device) + ": " + no_cuda;
  return nullptr;
}

result<device_copy_rates> measure_copy_limits(int device, std::size_t) {
  return result<device_copy_rates>{
    errc::unsupported, "copy limits of cuda:" + std::to_string(device) + ": " + no_cuda};
}

errc pin_host_range(void*, std::size_t, std::string* error) {
  if (error) *error = std::string("pin_host_range: ") + no_cuda;
  return errc::unsupported;
}

errc unpin_host_range(void*, std::string* error) {
  if (error) *error = std::string("unpin_host_range: ") + no_cuda;
  return errc::unsupported;
}

}  // namespace kvferry::gpu
