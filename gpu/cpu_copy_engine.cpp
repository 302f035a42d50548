// The CPU copy engine: memcpy on one worker thread, copies run in submission order.
//
//   submit() --push--> queue --worker--> check segments --ok--> memcpy each --> done(none)
//                                                        \--bad----------------> done(invalid_argument)
//
// Contract details beyond copy_engine.hpp:
// - `done` runs on the worker thread, exactly once per submit, after the copy; an empty `done`
//   is allowed (nothing is called). A copy counts in pending() until its `done` has returned.
// - An exception thrown by `done` is caught and dropped: the worker keeps serving later copies,
//   and the engine has no one to report it to (callbacks must not throw; this is a backstop).
// - A segment is invalid when dst or src is null with bytes > 0, or when its source and
//   destination ranges overlap (memcpy's precondition). An invalid segment fails the whole copy
//   before any byte is written.
// - The destructor lets the worker finish every queued copy (including copies submitted by
//   callbacks while it drains), then joins. It must not run on the worker thread (i.e. a `done`
//   callback must not destroy its own engine).
#include "gpu/copy_engine.hpp"

#include "gpu/copy_plan.hpp"  // check_segments, shared with the CUDA engine

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

namespace kvferry::gpu {

namespace {

struct copy_job {
  std::uint64_t ticket = 0;
  std::vector<copy_op> segments;
  copy_done_fn done;
};

class cpu_copy_engine final : public copy_engine {
 public:
  cpu_copy_engine() : worker_([this] { run(); }) {}

  ~cpu_copy_engine() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    worker_.join();
  }

  cpu_copy_engine(const cpu_copy_engine&) = delete;
  cpu_copy_engine& operator=(const cpu_copy_engine&) = delete;

  std::uint64_t submit(std::vector<copy_op> segments, copy_done_fn done) override {
    std::uint64_t ticket = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ticket = ++last_ticket_;
      queue_.push_back(copy_job{ticket, std::move(segments), std::move(done)});
      ++pending_;
    }
    wake_.notify_one();
    return ticket;
  }

  std::size_t pending() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return pending_;
  }

  bool wait_idle(std::chrono::milliseconds timeout) const override {
    std::unique_lock<std::mutex> lock(mutex_);
    return idle_.wait_for(lock, timeout, [this] { return pending_ == 0; });
  }

  std::string name() const override { return "cpu"; }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued was copied
      copy_job job = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      execute(job);
      job = copy_job{};  // drop the callback's captures outside the lock
      lock.lock();
      if (--pending_ == 0) idle_.notify_all();
    }
  }

  static void execute(copy_job& job) {
    std::string problem = check_segments(job.segments);
    errc code = errc::none;
    if (problem.empty()) {
      for (const auto& s : job.segments) {
        if (s.dst.bytes != 0) std::memcpy(ptr_of(s.dst.addr), ptr_of(s.src), s.dst.bytes);
      }
    } else {
      code = errc::invalid_argument;
    }
    if (!job.done) return;
    try {
      job.done(code, problem);
    } catch (...) {
      // Dropped on purpose: see the contract at the top of this file.
    }
  }

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  mutable std::condition_variable idle_;  // pending_ reached 0
  std::deque<copy_job> queue_;
  std::size_t pending_ = 0;
  std::uint64_t last_ticket_ = 0;
  bool stopping_ = false;
  std::thread worker_;  // last: starts after every other member is constructed
};

}  // namespace

std::unique_ptr<copy_engine> make_cpu_copy_engine() {
  return std::make_unique<cpu_copy_engine>();
}

}  // namespace kvferry::gpu
