#include "actors/node_health.hpp"

namespace kvferry {

node_health::node_health(std::uint32_t quarantine_budget)
    : quarantine_budget_(quarantine_budget), last_progress_ns_(now_ns()) {}

std::int64_t node_health::now_ns() {
  return std::chrono::steady_clock::now().time_since_epoch().count();
}

void node_health::notify() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    ++changes_;
  }
  cv_.notify_all();
}

void node_health::request_started() {
  in_flight_.fetch_add(1);
  notify();
}

void node_health::moving_started() {
  if (moving_.fetch_add(1) == 0)
    last_progress_ns_.store(now_ns());
}

void node_health::step_answered() {
  last_progress_ns_.store(now_ns());
}

void node_health::moving_ended() {
  moving_.fetch_sub(1);
}

void node_health::request_finished(const transfer_result& r, request_side side, bool released,
                                   bool moved) {
  last_progress_ns_.store(now_ns());
  in_flight_.fetch_sub(1);
  auto& mine = sides_[side == request_side::send ? 0 : 1];
  switch (r.status) {
    case transfer_status::succeeded:
      succeeded_.fetch_add(1);
      mine.succeeded.fetch_add(1);
      (side == request_side::send ? bytes_sent_ : bytes_received_).fetch_add(r.bytes);
      break;
    case transfer_status::cancelled:
      cancelled_.fetch_add(1);
      mine.cancelled.fetch_add(1);
      break;
    default:
      failed_.fetch_add(1);
      mine.failed.fetch_add(1);
      break;
  }
  if (moved) {
    mine.queue.record(r.timing.queue_us);
    mine.transfer.record(r.timing.transfer_us);
  }
  if (!released)
    unreleased_.fetch_add(1);
  notify();
}

void node_health::request_released_late() {
  unreleased_.fetch_sub(1);
  notify();
}

void node_health::child_restarted() {
  restarts_.fetch_add(1);
  notify();
}

void node_health::slot_poisoned() {
  poisoned_.fetch_add(1);
  notify();
}

void node_health::set_engine_counts(std::uint64_t worker_replacements,
                                    std::uint64_t writes_refused, std::uint64_t lost_wakeups) {
  bool changed = worker_replacements_.exchange(worker_replacements) != worker_replacements;
  changed = writes_refused_.exchange(writes_refused) != writes_refused || changed;
  if (lost_wakeups_.exchange(lost_wakeups) != lost_wakeups || changed)
    notify();
}

void node_health::set_parked_fetches(std::uint64_t n) {
  if (parked_fetches_.exchange(n) != n)
    notify();
}

void node_health::set_peers(std::uint64_t n) {
  if (peers_.exchange(n) != n)
    notify();
}

void node_health::set_unhealthy(std::string why) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    unhealthy_reason_ = std::move(why);
  }
  unhealthy_.store(true);
  notify();
}

void node_health::entry_published() {
  entry_publications_.fetch_add(1);
  notify();
}

bool node_health::wait_entry_publications(std::uint64_t n,
                                          std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{mtx_};
  return cv_.wait_for(guard, timeout, [&] { return entry_publications_.load() >= n; });
}

bool node_health::network_probe_due() {
  std::int64_t none = 0;
  return probe_posted_ns_.compare_exchange_strong(none, now_ns());
}

void node_health::network_probe_ran() {
  probe_posted_ns_.store(0);
  if (network_stalled_.exchange(false))
    notify();
}

bool node_health::check_network(std::chrono::milliseconds limit,
                                std::chrono::milliseconds* waited) {
  auto posted = probe_posted_ns_.load();
  auto waited_ns = posted == 0 ? 0 : now_ns() - posted;
  *waited = std::chrono::milliseconds{waited_ns / 1000000};
  bool stalled = waited_ns > std::chrono::nanoseconds{limit}.count();
  if (stalled == network_stalled_.exchange(stalled))
    return false;
  notify();
  return true;
}

bool node_health::check_progress(std::chrono::milliseconds deadline,
                                 std::chrono::milliseconds* idle) {
  auto idle_ns = now_ns() - last_progress_ns_.load();
  *idle = std::chrono::milliseconds{idle_ns / 1000000};
  bool stalled = moving_.load() > 0 &&
                 idle_ns > std::chrono::nanoseconds{deadline}.count();
  if (stalled == stalled_.exchange(stalled))
    return false;
  notify();
  return true;
}

health_snapshot node_health::snapshot() const {
  health_snapshot h;
  h.stalled = stalled_.load();
  h.unreleased = unreleased_.load();
  h.poisoned = poisoned_.load();
  h.quarantine_full = h.unreleased + h.poisoned >= quarantine_budget_;
  h.network_stalled = network_stalled_.load();
  bool unhealthy = unhealthy_.load();
  h.healthy = !unhealthy && !h.stalled && !h.quarantine_full && !h.network_stalled;
  h.ms_since_progress = static_cast<std::uint64_t>((now_ns() - last_progress_ns_.load()) / 1000000);
  auto because = [&h](const std::string& why) {
    h.reason += (h.reason.empty() ? "" : "; ") + why;
  };
  if (unhealthy) {
    std::lock_guard<std::mutex> guard{mtx_};
    because(unhealthy_reason_);
  }
  if (h.stalled)
    because("transfers are moving and none progressed for " +
            std::to_string(h.ms_since_progress) + " ms (progress_deadline_ms)");
  if (h.quarantine_full)
    because("unreleased requests and poisoned slots (" + std::to_string(h.unreleased) + " + " +
            std::to_string(h.poisoned) + ") fill quarantine_budget");
  if (h.network_stalled) {
    auto posted = probe_posted_ns_.load();
    because("the network thread has not run for " +
            std::to_string(posted == 0 ? 0 : (now_ns() - posted) / 1000000) +
            " ms (network_stall_ms)");
  }
  h.in_flight = in_flight_.load();
  h.succeeded = succeeded_.load();
  h.failed = failed_.load();
  h.cancelled = cancelled_.load();
  h.parked_fetches = parked_fetches_.load();
  h.peers = peers_.load();
  h.restarts = restarts_.load();
  h.worker_replacements = worker_replacements_.load();
  h.writes_refused = writes_refused_.load();
  h.lost_wakeups = lost_wakeups_.load();
  h.bytes_sent = bytes_sent_.load();
  h.bytes_received = bytes_received_.load();
  return h;
}

ops::side_metrics node_health::side(request_side s) const {
  auto& c = sides_[s == request_side::send ? 0 : 1];
  ops::side_metrics m;
  m.succeeded = c.succeeded.load();
  m.failed = c.failed.load();
  m.cancelled = c.cancelled.load();
  m.queue = c.queue.snapshot();
  m.transfer = c.transfer.snapshot();
  return m;
}

bool node_health::wait_for(const std::function<bool(const health_snapshot&)>& pred,
                           std::chrono::milliseconds timeout) const {
  auto until = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> guard{mtx_};
  for (;;) {
    auto seen = changes_;
    guard.unlock();
    if (pred(snapshot()))
      return true;
    guard.lock();
    if (!cv_.wait_until(guard, until, [&] { return changes_ != seen; }))
      return false;
  }
}

}  // namespace kvferry
