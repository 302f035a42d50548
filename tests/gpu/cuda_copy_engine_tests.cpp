// The CUDA copy engine and the pinning helpers where they cannot work: a build without CUDA, or
// a machine without a driver or device (every CI machine). They must refuse with a reason that
// names the cause, never crash, and keep refusing the same way. Where a device is present the
// last test does one gather and one scatter through the engine; the thorough GPU checks are the
// self-contained tests/gpu/cuda_device_selftest.cpp (bench/device-check.sh runs them).
#include "gpu/copy_engine.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <string>
#include <vector>

namespace {

using kvferry::errc;
using namespace std::chrono_literals;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("make_cuda_copy_engine without a usable device fails with a clear error") {
  const int devices = kvferry::gpu::cuda_device_count();
  std::string error;
  CHECK(kvferry::gpu::make_cuda_copy_engine(-1, &error) == nullptr);
  CHECK(contains(error, "CUDA copy engine for device -1: "));
  error.clear();
  CHECK(kvferry::gpu::make_cuda_copy_engine(devices, &error) == nullptr);  // one past the last
  CHECK(contains(error, "CUDA copy engine for device " + std::to_string(devices) + ": "));
  MESSAGE("one past the last device: " << error);
  CHECK(kvferry::gpu::make_cuda_copy_engine(devices, nullptr) == nullptr);  // no error wanted

#ifndef KVFERRY_WITH_CUDA
  CHECK(error == "CUDA copy engine for device 0: this build has no CUDA");
#else
  if (devices > 0) {
    MESSAGE("a device is present: the no-device error is not reachable here");
    return;
  }
  // No driver: cudaGetDeviceCount fails (cudaErrorInsufficientDriver here); a driver without a
  // device: it finds none. Either way the message says there is no device and why.
  error.clear();
  CHECK(kvferry::gpu::make_cuda_copy_engine(0, &error) == nullptr);
  MESSAGE("device 0: " << error);
  CHECK(error.rfind("CUDA copy engine for device 0: no CUDA device: cudaGetDeviceCount", 0) == 0);
  CHECK((contains(error, ": cudaError") || contains(error, "found none")));
  std::string again;
  CHECK(kvferry::gpu::make_cuda_copy_engine(0, &again) == nullptr);
  CHECK(again == error);
  CHECK(kvferry::gpu::cuda_device_count() == 0);
#endif
}

TEST_CASE("pin_host_range and unpin_host_range refuse precisely without CUDA or a device") {
  std::vector<std::uint8_t> buffer(1 << 16, 0x3c);
  std::string error;
#ifndef KVFERRY_WITH_CUDA
  CHECK(kvferry::gpu::pin_host_range(buffer.data(), buffer.size(), &error) == errc::unsupported);
  CHECK(error == "pin_host_range: this build has no CUDA");
  CHECK(kvferry::gpu::unpin_host_range(buffer.data(), &error) == errc::unsupported);
  CHECK(error == "unpin_host_range: this build has no CUDA");
#else
  // Misuse is refused before any CUDA call, device or not.
  CHECK(kvferry::gpu::pin_host_range(nullptr, 64, &error) == errc::invalid_argument);
  CHECK(contains(error, "null pointer"));
  CHECK(kvferry::gpu::pin_host_range(buffer.data(), 0, &error) == errc::invalid_argument);
  CHECK(contains(error, "empty range"));
  CHECK(kvferry::gpu::unpin_host_range(buffer.data(), &error) == errc::invalid_argument);
  CHECK(contains(error, "not the start of a range pinned by pin_host_range"));
  if (kvferry::gpu::cuda_device_count() > 0) {
    REQUIRE(kvferry::gpu::pin_host_range(buffer.data(), buffer.size(), &error) == errc::none);
    CHECK(kvferry::gpu::pin_host_range(buffer.data() + 4096, 64, &error) ==
          errc::invalid_argument);
    CHECK(contains(error, "already pinned"));
    CHECK(kvferry::gpu::unpin_host_range(buffer.data(), &error) == errc::none);
    return;
  }
  const errc code = kvferry::gpu::pin_host_range(buffer.data(), buffer.size(), &error);
  MESSAGE("without a device: " << error);
  CHECK(code == errc::unsupported);
  CHECK(contains(error, "cudaHostRegister: cuda"));
  // Nothing was recorded: the range cannot be unpinned, and pinning fails the same way again.
  CHECK(kvferry::gpu::unpin_host_range(buffer.data(), &error) == errc::invalid_argument);
  std::string again;
  CHECK(kvferry::gpu::pin_host_range(buffer.data(), buffer.size(), &again) == code);
#endif
  CHECK(buffer == std::vector<std::uint8_t>(buffer.size(), 0x3c));
}

TEST_CASE("where a device is present, the CUDA engine gathers and scatters host memory") {
  if (kvferry::gpu::cuda_device_count() == 0) {
    MESSAGE("no CUDA device here: nothing to copy with");
    return;
  }
  std::string error;
  auto engine = kvferry::gpu::make_cuda_copy_engine(0, &error);
  REQUIRE_MESSAGE(engine != nullptr, error);
  CHECK(engine->name() == "cuda:0");
  // Pinned host memory on both sides: the kernel path (and pageable memory: the memcpy path).
  std::vector<std::uint8_t> blocks(64 * 4096);
  std::vector<std::uint8_t> staging(64 * 4096, 0);
  std::vector<std::uint8_t> back(64 * 4096, 0);
  for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i] = static_cast<std::uint8_t>(i * 7 + 3);
  for (auto* v : {&blocks, &staging, &back}) {
    REQUIRE(kvferry::gpu::pin_host_range(v->data(), v->size(), &error) == errc::none);
  }
  std::vector<kvferry::copy_op> gather;
  std::vector<kvferry::copy_op> scatter;
  for (std::size_t i = 0; i < 64; ++i) {
    const std::size_t from = ((i * 37) % 64) * 4096;  // a permutation of the blocks
    gather.push_back({kvferry::addr_of(blocks.data() + from),
                      {kvferry::addr_of(staging.data() + i * 4096), 4096, 0}});
    scatter.push_back({kvferry::addr_of(staging.data() + i * 4096),
                       {kvferry::addr_of(back.data() + from), 4096, 0}});
  }
  for (auto* segments : {&gather, &scatter}) {
    std::promise<std::pair<errc, std::string>> result;
    engine->submit(*segments, [&](errc code, const std::string& detail) {
      result.set_value({code, detail});
    });
    auto f = result.get_future();
    REQUIRE(f.wait_for(30s) == std::future_status::ready);
    const auto got = f.get();
    CHECK_MESSAGE(got.first == errc::none, got.second);
  }
  CHECK(back == blocks);
  CHECK(engine->wait_idle(10s));
  engine.reset();
  for (auto* v : {&blocks, &staging, &back}) {
    CHECK(kvferry::gpu::unpin_host_range(v->data(), &error) == errc::none);
  }
}
