// The node's poll() queue: request actors push transfer events, the engine drains them.
// No CAF here.
#pragma once

#include "actors/transfer_handle.hpp"

#include <mutex>
#include <vector>

namespace kvferry::detail {

class event_sink {
 public:
  // From any thread.
  void push(transfer_event ev) {
    std::lock_guard<std::mutex> guard{mtx_};
    events_.push_back(std::move(ev));
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
  std::vector<transfer_event> events_;
};

}  // namespace kvferry::detail
