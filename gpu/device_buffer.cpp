#include "gpu/device_buffer.hpp"

#include <cstdlib>
#include <cstring>
#include <vector>

namespace kvferry::gpu {

namespace {

class host_buffer final : public device_buffer {
 public:
  explicit host_buffer(std::size_t bytes) : memory_(bytes, 0) {}
  void* data() const noexcept override { return const_cast<unsigned char*>(memory_.data()); }
  std::size_t bytes() const noexcept override { return memory_.size(); }
  error_info write(std::size_t offset, const void* src, std::size_t n) override {
    if (offset > memory_.size() || n > memory_.size() - offset)
      return {errc::out_of_range, "a write past the end of the buffer"};
    std::memcpy(memory_.data() + offset, src, n);
    return {};
  }
  error_info read(std::size_t offset, void* dst, std::size_t n) const override {
    if (offset > memory_.size() || n > memory_.size() - offset)
      return {errc::out_of_range, "a read past the end of the buffer"};
    std::memcpy(dst, memory_.data() + offset, n);
    return {};
  }

 private:
  std::vector<unsigned char> memory_;
};

}  // namespace

int cuda_device_of(const std::string& device) {
  if (device == "auto")
    return 0;
  if (device.rfind("cuda:", 0) == 0 && device.size() > 5 && device.size() <= 9 &&
      device.find_first_not_of("0123456789", 5) == std::string::npos)
    return std::atoi(device.c_str() + 5);
  return -1;
}

result<std::unique_ptr<device_buffer>> allocate_device_buffer(std::size_t bytes,
                                                              const std::string& device) {
  using out_t = result<std::unique_ptr<device_buffer>>;
  if (bytes == 0)
    return out_t{errc::invalid_argument, "a device buffer of 0 bytes"};
  if (device == "emulated")
    return out_t{std::unique_ptr<device_buffer>(std::make_unique<host_buffer>(bytes))};
  const int n = cuda_device_of(device);
  if (n < 0)
    return out_t{errc::unsupported,
                 "no device memory with device \"" + device + "\" (use \"auto\", \"cuda:<n>\" "
                 "or, without a GPU, \"emulated\")"};
  std::string error;
  auto buffer = make_cuda_buffer(n, bytes, &error);
  if (!buffer)
    return out_t{errc::unsupported, error};
  return out_t{std::move(buffer)};
}

}  // namespace kvferry::gpu
