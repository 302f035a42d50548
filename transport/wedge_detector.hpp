// Recognises a wedged UCX worker. No UCX here: the progress loop feeds it what it saw.
//
// The shared-memory transport's receive FIFO is shared by every sender: a sender reserves a
// slot, writes it, then marks it ready. A peer killed between those steps leaves a slot that is
// never marked, and every message behind it (a restarted peer's wireup included) is stuck for
// good. The worker then shows it as: ucp_worker_arm answers UCS_ERR_BUSY (the FIFO's head moved)
// while ucp_worker_progress finds nothing, cycle after cycle. Nothing inside UCX recovers that
// worker; the engine replaces it (engine_impl::replace_worker).
//
// A slow but live sender produces the same picture for microseconds, so only a wedge lasting
// `timeout` counts.
#pragma once

#include <chrono>
#include <optional>

namespace kvferry::transport {

class wedge_detector {
 public:
  using clock = std::chrono::steady_clock;

  // A timeout of zero switches detection off.
  explicit wedge_detector(std::chrono::milliseconds timeout) : timeout_(timeout) {}

  // One progress round: whether it progressed anything (or handled a completion), and whether
  // ucp_worker_arm then answered BUSY. True once the worker showed a wedge for longer than the
  // timeout; counting starts again after that.
  bool observe(bool progressed, bool arm_busy, clock::time_point now) {
    if (progressed || !arm_busy || timeout_.count() <= 0) {
      since_.reset();
      return false;
    }
    if (!since_) {
      since_ = now;
      return false;
    }
    if (now - *since_ < timeout_) {
      return false;
    }
    since_.reset();
    return true;
  }

 private:
  std::chrono::milliseconds timeout_;
  std::optional<clock::time_point> since_;
};

}  // namespace kvferry::transport
