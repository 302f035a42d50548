// published_address: this node's UCX worker address as the transport actor last published it
// (at its start, and after the engine replaced a wedged worker). The facade puts it into each
// fetch it builds, so a receive costs no round trip to the transport. No CAF here.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace kvferry {

class published_address {
 public:
  std::shared_ptr<const std::vector<std::uint8_t>> get() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return address_;
  }
  void set(std::vector<std::uint8_t> a) {
    auto p = std::make_shared<const std::vector<std::uint8_t>>(std::move(a));
    std::lock_guard<std::mutex> guard{mtx_};
    address_ = std::move(p);
  }

 private:
  mutable std::mutex mtx_;
  std::shared_ptr<const std::vector<std::uint8_t>> address_ =
    std::make_shared<const std::vector<std::uint8_t>>();
};

}  // namespace kvferry
