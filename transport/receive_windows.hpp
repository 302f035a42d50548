// receive_windows: where a peer's data message may write, one window per receive in flight.
// No UCX, no CAF here.
//
// A receive opens a window over its destination blocks before it sends its fetch, and the fetch
// carries the window's token; the sender's engine puts the token in every data message
// (engine_put.cpp), and this node's engine copies a message only into an open window that names
// it. Closing the window is then a proof of quiescence that needs nothing from the peer: once
// close() returned, no data message for that receive is being copied and none will be. A receive
// whose sender died (or went silent) closes its window and releases its memory at once, where
// before it had to quarantine it for good (F20 in docs/failure-modes.md).
//
// Tokens are random, non-zero and unique among open windows: a late message of an ended
// receive cannot land in the next receive into the same blocks, and a peer cannot guess one.
//
// When the engine replaces its UCX worker (a wedged shared-memory queue), every open window is
// lost: its sender was given the old worker's address, so nothing it sends can arrive any more.
// lose_all() closes them all and calls each window's `on_lost`, so that its receive ends (or,
// its fetch not yet sent, opens a new window) instead of waiting for data that will never come.
// Memory only a copy engine reaches (device memory) is written through a window too, but
// asynchronously: the engine copies the payload out of UCX's buffer into a landing buffer, whose
// batch is copied into device memory later (start_copy_if_open; device_landing.hpp); the window
// counts the message's copy until it finished. Closing waits
// for the counted copies, so the proof stays the same: once close() returned, nothing writes.
// A copy that failed is remembered, and close() reports it: the receive then fails instead of
// declaring bytes landed that never did.
// Thread-safe: receives open and close windows on their own threads, the engine writes through
// them on its progress thread, copies finish on the copy engine's thread.
#pragma once

#include <cstdint>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kvferry::transport {

class receive_windows {
 public:
  struct range {
    std::uint64_t addr = 0;
    std::uint64_t bytes = 0;
  };

  receive_windows();

  // Opens a window over `ranges` (empty ranges are left out, adjacent ones joined) and returns
  // its token. `on_lost` is called (on the engine's thread, without the table held) if
  // lose_all() closes the window; it must not block.
  std::uint64_t open(std::vector<range> ranges, std::function<void()> on_lost = {});
  // Closes the window: returns once no write through it is under way (copies started through it
  // included: this waits for them), and none can start. Returns false for a token that is not
  // open (0, closed already, lost, or never opened). `copy_error` (when not null) receives what
  // the first failed copy through the window said, or stays empty.
  bool close(std::uint64_t token, std::string* copy_error = nullptr);
  // Waits until no copy started through the window is under way, leaving it open; returns the
  // first failed copy's error (empty: none, or not open).
  std::string settle(std::uint64_t token);
  bool is_open(std::uint64_t token) const;
  // Closes every open window (as close() does) and then calls their `on_lost`. Returns how many
  // there were.
  std::size_t lose_all();

  // If [addr, addr+bytes) lies inside one range of the open window `token`, calls write() while
  // holding the table (so close() waits for it) and returns true; else returns false.
  template <class Write>
  bool write_if_open(std::uint64_t token, std::uint64_t addr, std::uint64_t bytes,
                     Write&& write) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!inside(token, addr, bytes))
      return false;
    std::forward<Write>(write)();
    return true;
  }

  // If [addr, addr+bytes) lies inside one range of the open window `token`, counts a copy for it
  // and calls start(finish) without the table held; `start` must take the copy on (begin it, or
  // queue it to begin without anyone's waiting for this window) without waiting for it, and
  // arrange for finish(error) to be called exactly once when it ended (empty error:
  // written), on any thread, also when start throws (then it is called here). Returns whether
  // the copy was started.
  template <class Start>
  bool start_copy_if_open(std::uint64_t token, std::uint64_t addr, std::uint64_t bytes,
                          Start&& start) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!inside(token, addr, bytes))
        return false;
      ++windows_.at(token).copies;
    }
    auto finish = [this, token](const std::string& error) { copy_finished(token, error); };
    try {
      std::forward<Start>(start)(finish);
    } catch (...) {
      finish("the copy into device memory could not be started");
    }
    return true;
  }

  std::size_t open_count() const;

 private:
  bool inside(std::uint64_t token, std::uint64_t addr, std::uint64_t bytes) const;
  void copy_finished(std::uint64_t token, const std::string& error);

  struct window {
    std::vector<range> ranges;  // sorted by addr
    std::function<void()> on_lost;
    std::size_t copies = 0;     // started through it and not finished
    bool closing = false;       // close() waits for its copies; nothing new lands
    std::string copy_error;     // the first failed copy's
  };

  // Waits (the lock held by `lock`) until the window has no copy under way.
  void wait_for_copies(std::unique_lock<std::mutex>& lock, std::uint64_t token);

  mutable std::mutex mutex_;
  std::condition_variable copies_done_;
  std::unordered_map<std::uint64_t, window> windows_;
  std::mt19937_64 random_;
};

// Closes its window when destroyed (a receive's actor that ends by an exception or a crash
// closes it too). Move-only.
class window_lease {
 public:
  window_lease() = default;
  window_lease(std::shared_ptr<receive_windows> windows, std::vector<receive_windows::range> ranges,
               std::function<void()> on_lost = {})
      : windows_(std::move(windows)),
        token_(windows_ ? windows_->open(std::move(ranges), std::move(on_lost)) : 0) {}
  window_lease(window_lease&& other) noexcept
      : windows_(std::move(other.windows_)), token_(std::exchange(other.token_, 0)) {}
  window_lease& operator=(window_lease&& other) noexcept {
    if (this != &other) {
      close();
      windows_ = std::move(other.windows_);
      token_ = std::exchange(other.token_, 0);
    }
    return *this;
  }
  window_lease(const window_lease&) = delete;
  window_lease& operator=(const window_lease&) = delete;
  ~window_lease() { close(); }

  std::uint64_t token() const noexcept { return token_; }
  // False once closed, or lost to a worker replacement.
  bool is_open() const { return token_ != 0 && windows_ && windows_->is_open(token_); }
  // True when this call closed an open window. `copy_error`: as receive_windows::close.
  bool close(std::string* copy_error = nullptr) {
    const std::uint64_t token = std::exchange(token_, 0);
    return token != 0 && windows_ && windows_->close(token, copy_error);
  }
  // receive_windows::settle of this window (empty when closed).
  std::string settle() const { return token_ != 0 && windows_ ? windows_->settle(token_) : ""; }

 private:
  std::shared_ptr<receive_windows> windows_;
  std::uint64_t token_ = 0;
};

}  // namespace kvferry::transport
