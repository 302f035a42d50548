// node_health: the counters and flags behind node::health(), written by the actors (request
// owners, supervisor, buffer pool, transport) and read by the facade without waiting for any
// actor. Every change is announced to wait_for() callers. No CAF here.
#pragma once

#include "kvferry/health.hpp"
#include "kvferry/transfer.hpp"
#include "ops/metrics.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

namespace kvferry {

enum class request_side : std::uint8_t { send, receive };


class node_health {
 public:
  explicit node_health(std::uint32_t quarantine_budget);

  // -- request owners ---------------------------------------------------------------------------
  // A request exists (work pending; the progress clock starts here if the node was idle).
  void request_started();
  // It reached its terminal state (`released`: its memory was proven quiescent before;
  // `moved`: its data started to move, so r.timing's queue and transfer times are both real).
  void request_finished(const transfer_result& r, request_side side, bool released, bool moved);
  // Its memory was proven quiescent after it reached its terminal state.
  void request_released_late();
  // A send's data starts to move through this node's transport (its fetch was accepted): work
  // the progress check waits on until moving_ended(). Requests that wait for someone else (a
  // send for its fetch, a receive for admission or for the sender's answer) are not: a node
  // holding 100,000 of them is idle, not stalled.
  void moving_started();
  // A step of a moving transfer (a copy, a batch of puts) was answered: progress.
  void step_answered();
  void moving_ended();

  // -- supervisor, pool, transport --------------------------------------------------------------
  void child_restarted();
  // The entry actor was published (again, after a restart): peers can connect.
  void entry_published();
  std::uint64_t entry_publications() const noexcept { return entry_publications_.load(); }
  // Waits at most `timeout` until `n` publications happened, waking on every change.
  bool wait_entry_publications(std::uint64_t n, std::chrono::milliseconds timeout) const;
  void slot_poisoned();
  // The engine's counters (transport::engine_stats), as the transport last read them.
  void set_engine_counts(std::uint64_t worker_replacements, std::uint64_t writes_refused,
                         std::uint64_t lost_wakeups);
  void set_parked_fetches(std::uint64_t n);  // the sender, after each change
  void set_peers(std::uint64_t n);           // the peer table, after each change
  // The restart budget is spent, or the entry could not be republished: `why`, in words.
  void set_unhealthy(std::string why);
  // -- the network thread (the supervisor's probe, run by CAF's multiplexer) --------------------
  // True when no probe is pending: the caller posts one now and the clock starts.
  bool network_probe_due();
  void network_probe_ran();  // the probe ran: the network thread is running
  // Stalled = a probe pending for longer than `limit`. Returns true when the flag changed.
  bool check_network(std::chrono::milliseconds limit, std::chrono::milliseconds* waited);
  // The global progress check (F13/F14): stalled = transfers moving and, for `deadline`, none
  // reached a terminal state and none had a step answered. Returns true when the flag changed.
  bool check_progress(std::chrono::milliseconds deadline, std::chrono::milliseconds* idle);

  std::uint64_t in_flight() const noexcept { return in_flight_.load(); }
  health_snapshot snapshot() const;
  // Per side (send, receive) outcomes and latency histograms (/metrics).
  ops::side_metrics side(request_side s) const;
  // Waits at most `timeout` until `pred(snapshot())` holds, waking on every change.
  bool wait_for(const std::function<bool(const health_snapshot&)>& pred,
                std::chrono::milliseconds timeout) const;

 private:
  void notify();
  static std::int64_t now_ns();

  const std::uint32_t quarantine_budget_;
  std::atomic<std::uint64_t> in_flight_{0}, succeeded_{0}, failed_{0}, cancelled_{0},
      unreleased_{0}, restarts_{0}, bytes_sent_{0}, bytes_received_{0}, poisoned_{0},
      worker_replacements_{0}, writes_refused_{0}, lost_wakeups_{0}, moving_{0},
      parked_fetches_{0}, peers_{0};
  // steady_clock ns of the last terminal request or answered step, or of a transfer starting
  // to move when none was.
  std::atomic<std::int64_t> last_progress_ns_;
  struct side_counters {
    std::atomic<std::uint64_t> succeeded{0}, failed{0}, cancelled{0};
    ops::latency_histogram queue, transfer;
  };
  side_counters sides_[2];  // request_side::send, request_side::receive
  std::atomic<bool> stalled_{false};
  std::atomic<bool> unhealthy_{false};
  std::string unhealthy_reason_;  // guarded by mtx_
  std::atomic<std::int64_t> probe_posted_ns_{0};  // 0: no probe pending
  std::atomic<bool> network_stalled_{false};
  std::atomic<std::uint64_t> entry_publications_{0};
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  std::uint64_t changes_ = 0;
};

}  // namespace kvferry
