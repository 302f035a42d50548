// transfer_handle: the engine's view of one transfer. No CAF here.
//
// A handle is a value (cheap to copy, nothrow-movable); dropping every copy is safe at any time:
// the owning request actor keeps what the transport may still touch. The owning actor resolves
// the shared state exactly once with a terminal result, and separately marks it *released* when
// the request's memory may be reused (which can come later than the terminal result).
#pragma once

#include "transport/errc.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace kvferry {

enum class transfer_status : std::uint8_t {
  pending,    // not yet exposed to the peer (queued, or waiting for the peer's fetch)
  in_flight,  // the peer's fetch matched / puts posted
  succeeded,  // every byte written and flushed
  failed,     // see result.code
  cancelled,  // cancelled by the engine or by the peer
};

const char* to_string(transfer_status s) noexcept;
inline bool is_terminal(transfer_status s) noexcept {
  return s == transfer_status::succeeded || s == transfer_status::failed ||
         s == transfer_status::cancelled;
}

struct transfer_result {
  transfer_status status = transfer_status::pending;
  errc code = errc::none;
  std::string message;       // empty on success; otherwise says what went wrong
  std::uint64_t bytes = 0;   // bytes moved
};

enum class event_kind : std::uint8_t {
  completed,  // terminal: succeeded, failed or cancelled (see result)
  released,   // the request's memory may be reused
};

struct transfer_event {
  std::string request_id;
  event_kind kind = event_kind::completed;
  transfer_result result;
};

namespace detail {

class event_sink;  // the node's poll() queue (node_core.hpp)

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

  // Process-wide count of second resolve()/release() attempts: must stay 0 (tests assert it).
  static std::uint64_t violations() noexcept;

 private:
  std::string request_id_;
  std::weak_ptr<event_sink> sink_;
  std::atomic<transfer_status> status_{transfer_status::pending};
  std::atomic<bool> released_{false};
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  std::optional<transfer_result> result_;  // set first; visible once settled_
  bool settled_ = false;                   // the on_done callbacks have returned
  std::vector<std::function<void(const transfer_result&)>> callbacks_;
};

}  // namespace detail

class transfer_handle {
 public:
  transfer_handle() = default;
  explicit transfer_handle(std::shared_ptr<detail::handle_state> st) noexcept
      : st_(std::move(st)) {}

  bool valid() const noexcept { return st_ != nullptr; }
  const std::string& request_id() const;
  // Never blocks.
  transfer_status status() const noexcept;
  // True once the request's memory may be reused. Never blocks.
  bool released() const noexcept;
  // The terminal result, if there is one yet. Never blocks on the network (a short mutex).
  std::optional<transfer_result> result() const;
  // Waits at most `timeout` for the terminal result.
  std::optional<transfer_result> wait_for(std::chrono::milliseconds timeout) const;
  // Waits at most `timeout` for the *released* event; true once the memory may be reused.
  bool wait_released(std::chrono::milliseconds timeout) const;
  // Waits at most `timeout` until the transfer left `pending` (in flight, or terminal).
  bool wait_started(std::chrono::milliseconds timeout) const;
  // Calls `callback` once with the terminal result: at once (on this thread) if there is one,
  // else on the owning actor's thread. The callback must not block. Callbacks registered
  // before the result came have all returned by the time status()/result()/wait_for() or
  // poll() show the result.
  void on_done(std::function<void(const transfer_result&)> callback) const;

 private:
  std::shared_ptr<detail::handle_state> st_;
};

static_assert(std::is_nothrow_move_constructible_v<transfer_handle>);
static_assert(std::is_nothrow_move_assignable_v<transfer_handle>);

}  // namespace kvferry
