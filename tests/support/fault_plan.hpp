// Fault injection over the real transport (test-only): a plan of rules, and an engine that
// wraps a real transport::engine and applies the plan to its operations. Nothing is faked: an
// operation that is not failed outright still goes through the real UCX engine, only later.
// No CAF here.
#pragma once

#include "gpu/copy_engine.hpp"
#include "transport/engine.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kvferry::transport {

enum class fault_action : std::uint8_t {
  delay,        // run the operation delay_ms later
  hold,         // keep the operation until fault_plan::release_held() (or engine teardown)
  fail,         // complete it at once with `code`, without touching UCX
  throw_std,    // throw std::runtime_error from the call
  throw_other,  // throw a value that is not a std::exception
};

struct fault_rule {
  std::string op = "put";   // "put" (UCX engine) or "copy" (copy engine: fail only)
  std::uint64_t nth = 1;    // the nth call of `op` (1-based); 0: every call
  fault_action action = fault_action::fail;
  std::uint32_t delay_ms = 0;
  errc code = errc::transport_error;
};

class fault_plan {
 public:
  void add(fault_rule rule);
  // The rule for this call of `op`, if any (counts the call).
  const fault_rule* next(const std::string& op);
  // Lets every held operation go on; later holds are held again.
  void release_held();
  std::uint64_t held() const;  // operations held right now
  // Waits at most `timeout` until `count` operations are held; true if they are.
  bool wait_held(std::uint64_t count, std::chrono::milliseconds timeout) const;
  std::uint64_t applied() const;  // rules applied so far

  // For the faulty engine.
  void hold(std::function<void()> resume);
  std::vector<std::function<void()>> take_held();

 private:
  mutable std::mutex mtx_;
  mutable std::condition_variable held_cv_;
  std::vector<fault_rule> rules_;
  std::vector<std::uint64_t> calls_;  // per op name index below
  std::vector<std::string> ops_;
  std::vector<std::function<void()>> held_;
  std::uint64_t applied_ = 0;
};

// Wraps `real`: every call is forwarded, except where the plan says otherwise.
std::unique_ptr<engine> make_faulty_engine(std::unique_ptr<engine> real,
                                           std::shared_ptr<fault_plan> plan);

// Wraps a copy engine: a "copy" rule with action fail completes that copy, on the engine's own
// thread and in order as always, with the rule's code and without copying a byte; every other
// copy is forwarded.
std::shared_ptr<gpu::copy_engine> make_faulty_copier(std::shared_ptr<gpu::copy_engine> real,
                                                     std::shared_ptr<fault_plan> plan);

}  // namespace kvferry::transport
