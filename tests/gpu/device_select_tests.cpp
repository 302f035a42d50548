// The node's device setting: which copy engine it picks and whether cuda regions are accepted;
// device buffers for tools; the device's copy limits. On a machine with a usable CUDA device
// the checks that need its absence are left out (they say so).
#include "gpu/device_buffer.hpp"
#include "gpu/device_select.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <vector>

using namespace kvferry;

TEST_CASE("device settings name CUDA devices as the config does") {
  CHECK(gpu::cuda_device_of("auto") == 0);
  CHECK(gpu::cuda_device_of("cuda:0") == 0);
  CHECK(gpu::cuda_device_of("cuda:17") == 17);
  CHECK(gpu::cuda_device_of("cuda:9999") == 9999);
  for (const char* other : {"none", "emulated", "cuda:", "cuda:12345", "cuda:x", "cuda:-1", "",
                            "CUDA:0", "cuda:0 "})
    CHECK_MESSAGE(gpu::cuda_device_of(other) == -1, other);
}

TEST_CASE("the copy engine a device setting picks, and whether it takes device memory") {
  auto none = gpu::select_copier("none");
  REQUIRE(none);
  CHECK(none->engine->name() == "cpu");
  CHECK_FALSE(none->device_memory);
  CHECK(none->why_not.find("\"none\"") != std::string::npos);
  auto emulated = gpu::select_copier("emulated");
  REQUIRE(emulated);
  CHECK(emulated->engine->name() == "cpu");
  CHECK(emulated->device_memory);
  CHECK_FALSE(emulated->pin_staging);
  auto bogus = gpu::select_copier("gpu0");
  REQUIRE_FALSE(bogus);
  CHECK(bogus.error().code == errc::invalid_argument);
  if (gpu::cuda_device_count() > 0) {
    MESSAGE("a CUDA device is present: the no-device checks are left out");
    return;
  }
  auto autod = gpu::select_copier("auto");
  REQUIRE(autod);  // starts on the CPU engine
  CHECK(autod->engine->name() == "cpu");
  CHECK_FALSE(autod->device_memory);
  CHECK_MESSAGE(autod->why_not.find("no CUDA device") != std::string::npos, autod->why_not);
  auto named = gpu::select_copier("cuda:0");
  REQUIRE_FALSE(named);
  CHECK(named.error().code == errc::unsupported);
  CHECK(named.error().message.find("cuda:0") != std::string::npos);
}

TEST_CASE("a device buffer: emulated in host memory, refused without a device, bounds checked") {
  auto buffer = gpu::allocate_device_buffer(4096, "emulated");
  REQUIRE(buffer);
  auto& b = *buffer.value();
  CHECK(b.bytes() == 4096);
  std::vector<unsigned char> in(100, 0x5a), out(100, 0);
  CHECK(b.write(1000, in.data(), in.size()).code == errc::none);
  CHECK(b.read(1000, out.data(), out.size()).code == errc::none);
  CHECK(in == out);
  CHECK(std::memcmp(static_cast<unsigned char*>(b.data()) + 1000, in.data(), in.size()) == 0);
  CHECK(b.write(4000, in.data(), in.size()).code == errc::out_of_range);  // runs past the end
  CHECK(b.read(~std::size_t{0}, out.data(), 1).code == errc::out_of_range);
  auto refused = gpu::allocate_device_buffer(4096, "none");
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::unsupported);
  CHECK(gpu::allocate_device_buffer(0, "emulated").error().code == errc::invalid_argument);
  if (gpu::cuda_device_count() > 0)
    return;
  auto no_device = gpu::allocate_device_buffer(4096, "auto");
  REQUIRE_FALSE(no_device);
  CHECK(no_device.error().code == errc::unsupported);
  CHECK_MESSAGE(no_device.error().message.find("cuda:0") != std::string::npos,
                no_device.error().message);
  auto limits = gpu::measure_copy_limits(0, 1 << 20);
  REQUIRE_FALSE(limits);
  CHECK(limits.error().code == errc::unsupported);
}
