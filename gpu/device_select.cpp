#include "gpu/device_select.hpp"

#include "gpu/device_buffer.hpp"


namespace kvferry::gpu {

namespace {

selected_copier on_cpu(bool device_memory, std::string why_not) {
  return selected_copier{std::shared_ptr<copy_engine>(make_cpu_copy_engine()), device_memory,
                         false, std::move(why_not)};
}

}  // namespace

result<selected_copier> select_copier(const std::string& device) {
  if (device == "none")
    return on_cpu(false, "this node's device setting is \"none\"");
  if (device == "emulated")
    return on_cpu(true, {});
  std::string error;
  if (device == "auto") {
    auto cuda = make_cuda_copy_engine(0, &error);
    if (!cuda)
      return on_cpu(false, "no CUDA device for this node (device \"auto\"): " + error);
    return selected_copier{std::shared_ptr<copy_engine>(std::move(cuda)), true, true, {}};
  }
  if (const int n = cuda_device_of(device); n >= 0) {
    auto cuda = make_cuda_copy_engine(n, &error);
    if (!cuda)
      return result<selected_copier>{errc::unsupported, "device \"" + device + "\": " + error};
    return selected_copier{std::shared_ptr<copy_engine>(std::move(cuda)), true, true, {}};
  }
  return result<selected_copier>{errc::invalid_argument,
                                 "device must be \"auto\", \"none\", \"emulated\" or "
                                 "\"cuda:<n>\", got \"" + device + "\""};
}

}  // namespace kvferry::gpu
