// handle_state: what the copies of a transfer_handle share with the request's owning actor.
// Internal (the public header only forward-declares it). No CAF here.
#pragma once

#include "kvferry/transfer.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace kvferry {

namespace detail {

class event_sink;  // the node's poll() queue (event_sink.hpp)

// Shared between the handle copies and the owning request actor.
class handle_state {
 public:
  handle_state(std::string request_id, std::weak_ptr<event_sink> sink);

  const std::string& request_id() const noexcept { return request_id_; }
  transfer_status status() const noexcept { return status_.load(std::memory_order_acquire); }
  bool released() const noexcept { return released_.load(std::memory_order_acquire); }

  // Non-terminal phase change (pending -> in_flight); ignored once terminal.
  void set_in_flight() noexcept;
  // Terminal result, exactly once: returns false (and counts a violation) on a second call.
  bool resolve(transfer_result r);
  // Memory may be reused; exactly once, returns false on a second call.
  bool release();

  std::optional<transfer_result> result() const;
  std::optional<transfer_result> wait_for(std::chrono::milliseconds timeout) const;
  bool wait_released(std::chrono::milliseconds timeout) const;
  bool wait_started(std::chrono::milliseconds timeout) const;
  void on_done(std::function<void(const transfer_result&)> callback);

  // Layer-wise streaming (transfer_options::layer_blocks). Send side: the number of layers, set
  // before the handle is shared; claim_layer() takes layer `i` as ready, once: errc::none, else
  // out_of_range (no such layer) or invalid_argument (not layered, or claimed already).
  void set_layers(std::uint32_t layers);
  errc claim_layer(std::uint32_t i);
  std::uint32_t layers() const;  // the layer count (send: set_layers; receive: once heard)
  // Receive side: layer `i` of `layers` landed (from the owning actor): queues its event; false
  // (nothing changes) for a repeat, an index outside `layers`, or a count that differs from the
  // one the first call gave.
  bool land_layer(std::uint32_t i, std::uint32_t layers);
  std::uint32_t layers_landed() const;
  bool wait_layer(std::uint32_t i, std::chrono::milliseconds timeout) const;

  // Process-wide count of second resolve()/release() attempts: must stay 0 (tests assert it).
  static std::uint64_t violations() noexcept;

 private:
  std::string request_id_;
  std::weak_ptr<event_sink> sink_;
  std::atomic<transfer_status> status_{transfer_status::pending};
  std::atomic<bool> released_{false};  // visible to waiters once the event is queued
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  std::optional<transfer_result> result_;  // set first; visible once settled_
  bool settled_ = false;                   // the on_done callbacks have returned
  bool release_claimed_ = false;           // release() ran once (guards the exactly-once)
  std::vector<std::function<void(const transfer_result&)>> callbacks_;
  // Layer-wise transfers only (absent otherwise): send: claimed ready; receive: landed.
  struct layer_book {
    std::vector<bool> set;
    std::uint32_t done = 0;  // how many are set
  };
  std::unique_ptr<layer_book> layers_;
};

}  // namespace detail

}  // namespace kvferry
