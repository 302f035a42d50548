// fake_copy_engine: a gpu::copy_engine that copies nothing by itself: the test completes each
// copy when it wants (then the bytes are really copied, so a staged transfer still moves data).
// The companion of fake_engine.hpp for staged sends under virtual time. No CAF here.
//
// Contract kept: every submitted copy's callback runs exactly once, on the thread that calls
// complete()/complete_all() (the test thread), outside the lock; the destructor completes what
// is still pending with errc::stopped.
#pragma once

#include "gpu/copy_engine.hpp"

#include <mutex>
#include <vector>

namespace kvferry::testing {

struct submitted_copy {
  std::uint64_t ticket = 0;
  std::vector<copy_op> segments;
  bool completed = false;
};

class fake_copy_engine final : public gpu::copy_engine {
 public:
  ~fake_copy_engine() override;

  std::uint64_t submit(std::vector<copy_op> segments, gpu::copy_done_fn done) override;
  std::size_t pending() const override;
  bool wait_idle(std::chrono::milliseconds) const override { return pending() == 0; }
  std::string name() const override { return "fake"; }

  // Copies the segments of `ticket` (unless `code` is an error) and reports `code`; false if the
  // ticket is unknown or already completed.
  bool complete(std::uint64_t ticket, errc code = errc::none);
  // Completes every pending copy with success, in order; returns how many.
  std::size_t complete_all();
  std::vector<submitted_copy> copies() const;

 private:
  mutable std::mutex mtx_;
  std::vector<submitted_copy> copies_;
  std::vector<gpu::copy_done_fn> callbacks_;  // by index of copies_
};

}  // namespace kvferry::testing
