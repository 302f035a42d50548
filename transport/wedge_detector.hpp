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
// `timeout` counts. On a machine whose CPUs are busy with other work, a live sender may not be
// scheduled for longer than that: when more threads are runnable than there are cores, the
// wait stretches in proportion (runnable threads per core, at most max_stretch times), so "no
// CPU" is not taken for "no progress". A real wedge is then replaced later, never missed.
#pragma once

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>

namespace kvferry::transport {

// Threads runnable right now per core (/proc/stat's procs_running over the cores this process
// may use); 1 when it cannot be read.
inline double runnable_per_core() {
  std::ifstream in{"/proc/stat"};
  std::string key;
  while (in >> key) {
    if (key == "procs_running") {
      double running = 0;
      in >> running;
      const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
      return running / cores;
    }
    in.ignore(1 << 20, '\n');
  }
  return 1.0;
}

class wedge_detector {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr double max_stretch = 20;  // 500 ms at most 10 s
  // How often the load is read again while a stretched wait goes on.
  static constexpr std::chrono::milliseconds load_refresh{50};

  // A timeout of zero switches detection off. `load` says how many threads are runnable per
  // core (tests give their own).
  explicit wedge_detector(std::chrono::milliseconds timeout,
                          std::function<double()> load = runnable_per_core)
      : timeout_(timeout), load_(std::move(load)) {}

  // One progress round: whether it progressed anything (or handled a completion), and whether
  // ucp_worker_arm then answered BUSY. True once the worker showed a wedge for longer than the
  // timeout, stretched by the CPU load; counting starts again after that.
  bool observe(bool progressed, bool arm_busy, clock::time_point now) {
    if (progressed || !arm_busy || timeout_.count() <= 0) {
      since_.reset();
      loaded_at_.reset();
      return false;
    }
    if (!since_) {
      since_ = now;
      return false;
    }
    if (now - *since_ < timeout_) {
      return false;
    }
    if (!loaded_at_ || now - *loaded_at_ >= load_refresh) {
      stretch_ = std::clamp(load_ ? load_() : 1.0, 1.0, max_stretch);
      loaded_at_ = now;
    }
    if (now - *since_ < std::chrono::duration<double, std::milli>(timeout_) * stretch_) {
      return false;
    }
    since_.reset();
    loaded_at_.reset();
    return true;
  }

 private:
  std::chrono::milliseconds timeout_;
  std::function<double()> load_;
  std::optional<clock::time_point> since_;
  std::optional<clock::time_point> loaded_at_;  // when stretch_ was last read
  double stretch_ = 1;
};

}  // namespace kvferry::transport
