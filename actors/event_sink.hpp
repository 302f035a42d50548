// The node's poll() queue: request actors push transfer events, the engine drains them.
// No CAF here.
#pragma once

#include "kvferry/transfer.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

namespace kvferry::detail {

class event_sink {
 public:
  // From any thread.
  void push(transfer_event ev) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      events_.push_back(std::move(ev));
    }
    cv_.notify_all();
  }
  // Waits at most `timeout` for at least one event, then drains.
  std::vector<transfer_event> wait_and_drain(std::chrono::milliseconds timeout) {
    std::vector<transfer_event> out;
    std::unique_lock<std::mutex> guard{mtx_};
    cv_.wait_for(guard, timeout, [this] { return !events_.empty(); });
    out.swap(events_);
    return out;
  }
  // Never blocks on anything but this short mutex.
  std::vector<transfer_event> drain() {
    std::vector<transfer_event> out;
    std::lock_guard<std::mutex> guard{mtx_};
    out.swap(events_);
    return out;
  }

 private:
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<transfer_event> events_;
};

}  // namespace kvferry::detail
