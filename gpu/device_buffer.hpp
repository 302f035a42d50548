// Memory for a cuda region, for tools and tests (`kvferry demo --pool cuda`): device memory of
// the node's CUDA device, or host memory for a node whose device is "emulated". Filling and
// checking it goes through blocking copies (cudaMemcpy): never on the data path. No CAF here.
#pragma once

#include "kvferry/result.hpp"

#include <cstddef>
#include <memory>
#include <string>

namespace kvferry::gpu {

class device_buffer {
 public:
  virtual ~device_buffer() = default;
  virtual void* data() const noexcept = 0;
  virtual std::size_t bytes() const noexcept = 0;
  // Blocking copies between host memory and [offset, offset + n) of the buffer; a range outside
  // it is errc::out_of_range, a CUDA failure names the CUDA error.
  virtual error_info write(std::size_t offset, const void* src, std::size_t n) = 0;
  virtual error_info read(std::size_t offset, void* dst, std::size_t n) const = 0;
};

// The CUDA device number a device setting names: "auto" is 0, "cuda:<n>" is n (at most 4
// digits); -1 for anything else ("none", "emulated", malformed).
int cuda_device_of(const std::string& device);

// What the device's own copies reach (GB/s, 1e9 bytes/s), measured with `bytes` at a time:
// pinned host memory to the device and back (cudaMemcpy), and device to device; each the best
// of a few runs. errc::unsupported without CUDA or that device.
struct device_copy_rates {
  double host_to_device = 0;
  double device_to_host = 0;
  double device_to_device = 0;
};
result<device_copy_rates> measure_copy_limits(int device, std::size_t bytes);

// `device` as node_config::device: "auto" (device 0) or "cuda:<n>" allocate on that device,
// "emulated" in host memory; "none" (and a device that cannot allocate) is refused naming why.
result<std::unique_ptr<device_buffer>> allocate_device_buffer(std::size_t bytes,
                                                              const std::string& device);

// cudaMalloc on `device`; null with the reason in *error without CUDA, a device, or memory.
std::unique_ptr<device_buffer> make_cuda_buffer(int device, std::size_t bytes, std::string* error);

}  // namespace kvferry::gpu
