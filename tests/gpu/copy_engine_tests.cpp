// The CPU copy engine's contract, and the CUDA probe on a machine without a GPU.
#include "gpu/copy_engine.hpp"

#include <doctest/doctest.h>

#include <future>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using kvferry::errc;
using kvferry::copy_op;

// A copy of `bytes` from `src` to `dst` (both local).
copy_op seg(const void* dst, const void* src, std::size_t bytes) {
  return copy_op{kvferry::addr_of(src), {kvferry::addr_of(dst), bytes, 0}};
}
using kvferry::gpu::make_cpu_copy_engine;
using namespace std::chrono_literals;

// Counts callbacks; wait_for(n) blocks (bounded) until n arrived.
class callback_counter {
 public:
  void arrived(errc code) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++count_;
    if (code != errc::none) ++failures_;
    cv_.notify_all();
  }
  bool wait_for(int n, std::chrono::milliseconds limit = 10s) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, limit, [&] { return count_ >= n; });
  }
  int count() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return count_;
  }
  int failures() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return failures_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  int count_ = 0;
  int failures_ = 0;
};

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(gen());
  return out;
}

}  // namespace

TEST_CASE("copies of many segments land byte-exact") {
  auto engine = make_cpu_copy_engine();
  CHECK(engine->name() == "cpu");
  const std::size_t total = 8u << 20;
  const auto src = random_bytes(total, 42);
  std::vector<std::uint8_t> dst(total, 0);

  // Scatter: segment i copies a block of src into the mirrored position of dst, with sizes
  // from 0 bytes to 64 KiB + 7 so unaligned and empty segments are covered.
  std::vector<copy_op> segments;
  std::vector<std::pair<std::size_t, std::size_t>> ranges;  // (offset, bytes)
  std::mt19937 gen(7);
  std::size_t offset = 0;
  while (offset < total) {
    std::size_t bytes = std::min<std::size_t>(gen() % (64 * 1024 + 8), total - offset);
    ranges.emplace_back(offset, bytes);
    offset += bytes;
  }
  for (const auto& [off, bytes] : ranges) {
    segments.push_back(seg(dst.data() + (total - off - bytes), src.data() + off, bytes));
  }
  REQUIRE(segments.size() > 100);

  callback_counter done;
  errc got = errc::internal_error;
  engine->submit(std::move(segments), [&](errc code, const std::string& detail) {
    got = code;
    CHECK(detail.empty());
    done.arrived(code);
  });
  REQUIRE(done.wait_for(1));
  CHECK(got == errc::none);
  bool exact = true;
  for (const auto& [off, bytes] : ranges) {
    if (std::memcmp(dst.data() + (total - off - bytes), src.data() + off, bytes) != 0) exact = false;
  }
  CHECK(exact);
}

TEST_CASE("done fires exactly once per submit across 1000 submits") {
  constexpr int submits = 1000;
  std::vector<std::atomic<int>> calls(submits);
  std::vector<std::uint64_t> tickets;
  std::vector<std::uint8_t> src(4096, 0xab);
  std::vector<std::vector<std::uint8_t>> dst(submits, std::vector<std::uint8_t>(4096, 0));
  callback_counter done;
  std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> on_caller_thread{0};
  {
    auto engine = make_cpu_copy_engine();
    for (int i = 0; i < submits; ++i) {
      tickets.push_back(engine->submit({seg(dst[i].data(), src.data(), src.size())},
                                       [&, i](errc code, const std::string&) {
                                         if (std::this_thread::get_id() == caller) ++on_caller_thread;
                                         ++calls[i];
                                         done.arrived(code);
                                       }));
    }
    REQUIRE(done.wait_for(submits));
    // pending() drops once each callback has returned.
    CHECK(engine->wait_idle(10s));
    CHECK(engine->pending() == 0);
  }
  CHECK(done.count() == submits);  // still exactly once each after the engine is gone
  CHECK(done.failures() == 0);
  CHECK(on_caller_thread == 0);
  for (int i = 0; i < submits; ++i) CHECK(calls[i] == 1);
  CHECK(tickets.front() > 0);
  for (std::size_t i = 1; i < tickets.size(); ++i) CHECK(tickets[i] > tickets[i - 1]);
  CHECK(dst.back()[4095] == 0xab);
}

TEST_CASE("an invalid segment fails with invalid_argument and later copies still work") {
  auto engine = make_cpu_copy_engine();
  std::vector<std::uint8_t> src(64, 1);
  std::vector<std::uint8_t> dst(64, 0);
  callback_counter done;
  errc first = errc::none;
  std::string detail;
  // A valid segment before the bad one: nothing of a refused copy is written.
  engine->submit({seg(dst.data(), src.data(), 32), seg(nullptr, src.data(), 16)},
                 [&](errc code, const std::string& d) {
                   first = code;
                   detail = d;
                   done.arrived(code);
                 });
  REQUIRE(done.wait_for(1));
  CHECK(first == errc::invalid_argument);
  CHECK_FALSE(detail.empty());
  CHECK(dst[0] == 0);

  errc null_src = errc::none;
  engine->submit({seg(dst.data(), nullptr, 1)}, [&](errc code, const std::string&) {
    null_src = code;
    done.arrived(code);
  });
  errc overlap = errc::none;
  engine->submit({seg(src.data() + 1, src.data(), 8)}, [&](errc code, const std::string&) {
    overlap = code;
    done.arrived(code);
  });
  errc zero = errc::internal_error;
  engine->submit({seg(nullptr, nullptr, 0)}, [&](errc code, const std::string&) {  // empty is fine
    zero = code;
    done.arrived(code);
  });
  errc later = errc::internal_error;
  engine->submit({seg(dst.data(), src.data(), 64)}, [&](errc code, const std::string&) {
    later = code;
    done.arrived(code);
  });
  REQUIRE(done.wait_for(5));
  CHECK(null_src == errc::invalid_argument);
  CHECK(overlap == errc::invalid_argument);
  CHECK(zero == errc::none);
  CHECK(later == errc::none);
  CHECK(dst == src);
}

TEST_CASE("the destructor drains queued work before it returns") {
  constexpr int submits = 200;
  std::vector<std::uint8_t> src(1 << 16, 0x5a);
  std::vector<std::vector<std::uint8_t>> dst(submits, std::vector<std::uint8_t>(src.size(), 0));
  std::atomic<int> completed{0};
  {
    auto engine = make_cpu_copy_engine();
    // The first callback holds the worker until the scope ends, so that the rest is still
    // queued when the destructor begins.
    std::promise<void> go;
    auto gate = go.get_future().share();
    engine->submit({}, [gate](errc, const std::string&) { gate.wait(); });
    for (int i = 0; i < submits; ++i) {
      engine->submit({seg(dst[i].data(), src.data(), src.size())},
                     [&](errc code, const std::string&) {
                       if (code == errc::none) ++completed;
                     });
    }
    CHECK(engine->pending() == submits + 1);
    go.set_value();
  }
  CHECK(completed == submits);
  bool all_copied = true;
  for (const auto& d : dst) all_copied = all_copied && d == src;
  CHECK(all_copied);
}

TEST_CASE("a throwing callback does not stop later copies") {
  auto engine = make_cpu_copy_engine();
  engine->submit({}, [](errc, const std::string&) { throw std::runtime_error("callback bug"); });
  engine->submit({}, [](errc, const std::string&) { throw 42; });
  std::uint8_t src[16] = {1, 2, 3};
  std::uint8_t dst[16] = {};
  callback_counter done;
  engine->submit({seg(dst, src, sizeof src)}, [&](errc code, const std::string&) { done.arrived(code); });
  REQUIRE(done.wait_for(1));
  CHECK(done.failures() == 0);
  CHECK(std::memcmp(dst, src, sizeof src) == 0);
  CHECK(engine->wait_idle(10s));
  CHECK(engine->pending() == 0);
}

TEST_CASE("a copy stays pending until its callback has returned") {
  auto engine = make_cpu_copy_engine();
  std::mutex gate;
  std::unique_lock<std::mutex> hold(gate);
  callback_counter entered;
  engine->submit({}, [&](errc code, const std::string&) {
    entered.arrived(code);
    std::lock_guard<std::mutex> wait_here(gate);
  });
  REQUIRE(entered.wait_for(1));
  CHECK(engine->pending() == 1);
  hold.unlock();
  CHECK(engine->wait_idle(10s));
  CHECK(engine->pending() == 0);
}

TEST_CASE("a callback may submit further copies, also while the engine drains") {
  std::uint8_t src[8] = {9, 8, 7, 6, 5, 4, 3, 2};
  std::uint8_t dst[8] = {};
  std::atomic<int> second{0};
  {
    auto engine = make_cpu_copy_engine();
    auto* raw = engine.get();
    std::promise<void> go;
    auto gate = go.get_future().share();
    engine->submit({}, [&, raw, gate](errc, const std::string&) {
      gate.wait();  // released as the engine's destructor is about to run
      raw->submit({seg(dst, src, sizeof src)}, [&](errc code, const std::string&) {
        if (code == errc::none) ++second;
      });
    });
    go.set_value();
  }
  CHECK(second == 1);
  CHECK(std::memcmp(dst, src, sizeof src) == 0);
}

TEST_CASE("an empty done function is allowed") {
  auto engine = make_cpu_copy_engine();
  std::uint8_t src[4] = {1, 2, 3, 4};
  std::uint8_t dst[4] = {};
  engine->submit({seg(dst, src, sizeof src)}, nullptr);
  callback_counter done;
  engine->submit({}, [&](errc code, const std::string&) { done.arrived(code); });
  REQUIRE(done.wait_for(1));
  CHECK(std::memcmp(dst, src, sizeof src) == 0);
}

TEST_CASE("cuda_device_count returns 0 on a machine without a GPU driver") {
  const int count = kvferry::gpu::cuda_device_count();
  CHECK(count >= 0);
  const bool driver_present = std::filesystem::exists("/proc/driver/nvidia/version") ||
                              std::filesystem::exists("/dev/nvidia0");
#ifdef KVFERRY_WITH_CUDA
  MESSAGE("built with CUDA; driver present: " << driver_present << ", devices: " << count);
#else
  MESSAGE("built without CUDA");
  CHECK(count == 0);
#endif
  if (!driver_present) CHECK(count == 0);
  CHECK(kvferry::gpu::cuda_device_count() == count);  // a second call agrees
}
