// The queue every copy engine keeps between submit() and its own worker thread: tickets, the
// pending count that wait_idle() watches, the stop flag. Internal to gpu/ (no CAF).
#pragma once

#include "gpu/copy_engine.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>

namespace kvferry::gpu {

// `Job` has ticket, segments and done members. The worker takes jobs under `mutex` (waiting on
// `wake`) and calls completed() once per job after its `done` returned.
template <class Job>
class copy_queue {
 public:
  std::uint64_t push(std::vector<copy_op> segments, copy_done_fn done) {
    std::uint64_t ticket = 0;
    {
      std::lock_guard<std::mutex> lock(mutex);
      ticket = ++last_ticket_;
      Job job;
      job.ticket = ticket;
      job.segments = std::move(segments);
      job.done = std::move(done);
      jobs.push_back(std::move(job));
      ++pending_;
    }
    wake.notify_one();
    return ticket;
  }

  std::size_t pending() const {
    std::lock_guard<std::mutex> lock(mutex);
    return pending_;
  }

  bool wait_idle(std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> lock(mutex);
    return idle_.wait_for(lock, timeout, [this] { return pending_ == 0; });
  }

  // The worker ends once it has completed everything queued.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stopping = true;
    }
    wake.notify_one();
  }

  // One job's `done` has returned (not under `mutex`).
  void completed() {
    std::lock_guard<std::mutex> lock(mutex);
    if (--pending_ == 0) idle_.notify_all();
  }

  // The worker's side, under `mutex`.
  mutable std::mutex mutex;
  std::condition_variable wake;
  std::deque<Job> jobs;
  bool stopping = false;

 private:
  mutable std::condition_variable idle_;  // pending_ reached 0
  std::size_t pending_ = 0;
  std::uint64_t last_ticket_ = 0;
};

}  // namespace kvferry::gpu
