#include "tests/support/virtual_time.hpp"

#include <caf/all.hpp>
#include <doctest/doctest.h>

namespace kvferry::testing {

namespace {

// A type no message carries: the recorder's behaviour matches nothing (and so stays alive);
// every message reaches its default handler.
struct never_sent {};

caf::actor_system_config& testing_config(
  caf::actor_system_config& cfg, const std::function<void(caf::actor_system_config&)>& configure) {
  if (configure)
    configure(cfg);
  // The deterministic scheduler: no worker threads; jobs run only when the test dispatches them,
  // timers fire only when the test moves the clock.
  cfg.set("scheduler.policy", caf::atom("testing"));
  cfg.set("logger.verbosity", caf::atom("quiet"));
  return cfg;
}

}  // namespace

virtual_time::virtual_time(const std::function<void(caf::actor_system_config&)>& configure)
    : sys_(std::make_unique<caf::actor_system>(testing_config(cfg_, configure))) {
  // Throws std::bad_cast if the policy was not applied: better than a test on real threads.
  sched_ = &dynamic_cast<caf::scheduler::test_coordinator&>(sys_->scheduler());
  // The test clock starts 1 ns after the epoch; CAF's own fixture moves it away from there so
  // that no computed deadline can land on or before time_point{}. Do the same.
  clock().current_time += std::chrono::hours(1);
  start_ = clock().current_time;
}

virtual_time::~virtual_time() {
  for (auto& a : tracked_)
    caf::anon_send_exit(a, caf::exit_reason::kill);
  tracked_.clear();
  run();
  // Teardown never advances the clock: timers still pending are dropped, not fired (their
  // receivers are dead or about to be; a delayed message holds a strong reference to them).
  clock().cancel_all();
  run();
  if (auto left = sys_->registry().running(); left != 0) {
    FAIL_CHECK(left << " actor(s) still running at teardown although every tracked actor was "
                       "killed: an untracked actor kept alive by a reference cycle? The actor "
                       "system is leaked instead of hanging in its destructor.");
    (void)sys_.release();
  }
}

std::size_t virtual_time::run(std::size_t limit) {
  std::size_t n = 0;
  while (n < limit && sched_->try_run_once())
    ++n;
  if (n == limit && sched_->has_job())
    FAIL_CHECK("virtual_time::run(): still busy after " << limit << " messages (a livelock?)");
  return n;
}

bool virtual_time::dispatch_one() {
  return sched_->try_run_once();
}

std::size_t virtual_time::advance_time(caf::timespan d) {
  return clock().advance_time(d);
}

std::size_t virtual_time::advance_and_run(caf::timespan d) {
  advance_time(d);
  return run();
}

bool virtual_time::fire_next_timeout() {
  return clock().trigger_timeout();
}

std::size_t virtual_time::pending_timeouts() const {
  return sched_->clock().schedule().size();
}

std::optional<caf::timespan> virtual_time::next_timeout_in() const {
  const auto& schedule = sched_->clock().schedule();
  if (schedule.empty())
    return std::nullopt;
  auto due = schedule.begin()->first;
  auto now = sched_->clock().current_time;
  return due > now ? std::chrono::duration_cast<caf::timespan>(due - now) : caf::timespan{0};
}

caf::timespan virtual_time::now() const {
  return std::chrono::duration_cast<caf::timespan>(sched_->clock().current_time - start_);
}

recorder virtual_time::spawn_recorder() {
  auto inbox = std::make_shared<std::vector<caf::message>>();
  auto actor = spawn(
    [](caf::event_based_actor* self,
       std::shared_ptr<std::vector<caf::message>> to) -> caf::behavior {
      self->set_default_handler(
        [to](caf::scheduled_actor*, caf::message_view& x) -> caf::result<caf::message> {
          to->push_back(x.copy_content_to_message());
          return caf::message{};
        });
      return {[](const never_sent&) {}};
    },
    inbox);
  return recorder{actor, inbox};
}

}  // namespace kvferry::testing
