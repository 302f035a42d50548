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
#include "gpu/copy_queue.hpp"

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
    queue_.stop();
    worker_.join();
  }

  cpu_copy_engine(const cpu_copy_engine&) = delete;
  cpu_copy_engine& operator=(const cpu_copy_engine&) = delete;

  std::uint64_t submit(std::vector<copy_op> segments, copy_done_fn done) override {
    return queue_.push(std::move(segments), std::move(done));
  }

  std::size_t pending() const override { return queue_.pending(); }

  bool wait_idle(std::chrono::milliseconds timeout) const override {
    return queue_.wait_idle(timeout);
  }

  std::string name() const override { return "cpu"; }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(queue_.mutex);
    for (;;) {
      queue_.wake.wait(lock, [this] { return queue_.stopping || !queue_.jobs.empty(); });
      if (queue_.jobs.empty()) return;  // stopping, and everything queued was copied
      copy_job job = std::move(queue_.jobs.front());
      queue_.jobs.pop_front();
      lock.unlock();
      execute(job);
      job = copy_job{};  // drop the callback's captures outside the lock
      queue_.completed();
      lock.lock();
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

  copy_queue<copy_job> queue_;
  std::thread worker_;  // last: starts after every other member is constructed
};

}  // namespace

std::unique_ptr<copy_engine> make_cpu_copy_engine() {
  return std::make_unique<cpu_copy_engine>();
}

}  // namespace kvferry::gpu
