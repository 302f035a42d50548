// Deadlines and the global progress deadline, between two nodes over real UCX and CAF
// networking. Tests are named after their row in docs/failure-modes.md.
#include "node_pair.hpp"

#include <future>

using namespace kvferry;
using namespace kvferry::test;
using namespace std::chrono_literals;

namespace {

node_config with(std::uint32_t default_deadline_ms, std::uint32_t progress_deadline_ms = 30000) {
  node_config cfg;
  cfg.default_deadline_ms = default_deadline_ms;
  cfg.progress_deadline_ms = progress_deadline_ms;
  return cfg;
}

double ms_since(steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(steady::now() - t0).count();
}

}  // namespace

TEST_CASE("F4: a send whose peer never fetches times out and releases its blocks") {
  node_pair np{4 * 4096, with(0)};
  transfer_options opts;
  opts.deadline_ms = 200;
  auto t0 = steady::now();
  auto s = np.prefill->send("never-fetched", {{np.src_region, 0, 4096}}, opts);
  auto r = s.wait_for(patience);
  REQUIRE(r);
  auto took = ms_since(t0);
  MESSAGE("F4 deadline 200 ms fired after " << took << " ms");
  CHECK(r->status == transfer_status::failed);
  CHECK(r->code == errc::timed_out);
  CHECK(r->message.find("never-fetched") != std::string::npos);
  CHECK(took >= 190);  // not before the deadline (timer granularity allowance)
  // Nothing was exposed: the released event follows the terminal one at once.
  CHECK(s.wait_released(2s));
  std::map<std::string, std::vector<transfer_event>> seen;
  auto evs = events_for(*np.prefill, "never-fetched", 2, seen);
  CHECK(count_kind(evs, event_kind::completed) == 1);
  CHECK(count_kind(evs, event_kind::released) == 1);
  CHECK(np.prefill->health().in_flight == 0);
  CHECK(np.prefill->health().healthy);  // F13: one timeout is not a sick node
}

TEST_CASE("a receive queued behind a stuck fetch times out in its queue and is released") {
  node_config cfg = with(0);
  cfg.max_fetches_in_flight = 1;
  node_pair np{4 * 4096, cfg};
  auto stuck = np.decode->receive("stuck", np.peer, {{np.dst_region, 0, 4096}});
  REQUIRE(stuck.wait_started(patience));
  REQUIRE(stuck.status() == transfer_status::in_flight);
  transfer_options opts;
  opts.deadline_ms = 150;
  auto queued = np.decode->receive("queued", np.peer, {{np.dst_region, 4096, 4096}}, opts);
  auto r = queued.wait_for(patience);
  REQUIRE(r);
  CHECK(r->code == errc::timed_out);
  CHECK(r->message.find("before its fetch was sent") != std::string::npos);
  CHECK(queued.wait_released(2s));
  CHECK(np.decode->cancel("stuck") == cancel_result::cancel_requested_in_flight);
}

TEST_CASE("a parked fetch is answered timed_out at the receive's deadline, and both sides clean up") {
  node_pair np{4 * 4096, with(0)};
  transfer_options opts;
  opts.deadline_ms = 250;
  auto r = np.decode->receive("parked", np.peer, {{np.dst_region, 0, 4096}}, opts);
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->code == errc::timed_out);
  // The sender answers the cancel or its own parking deadline; either is proof nothing is
  // written, so the destination is released.
  CHECK(r.wait_released(patience));
  CHECK(std::all_of(np.dst.begin(), np.dst.end(), [](auto b) { return b == 0; }));
  // The id is usable again on both sides.
  auto [s2, r2] = np.start("parked", 0, 0, 4096);
  auto r2r = r2.wait_for(patience);
  REQUIRE(r2r);
  CHECK(r2r->status == transfer_status::succeeded);
}

TEST_CASE("F5: after a storm of deadlines on an absent peer, the next transfer runs at normal latency") {
  node_pair np{64 * 4096, with(0)};
  // Baseline latency of one transfer.
  auto once = [&](const std::string& id) {
    auto t0 = steady::now();
    auto s = np.prefill->send(id, {{np.src_region, 0, 4096}});
    auto r = np.decode->receive(id, np.peer, {{np.dst_region, 0, 4096}});
    auto rr = r.wait_for(patience);
    REQUIRE(rr);
    CHECK(rr->status == transfer_status::succeeded);
    return ms_since(t0);
  };
  auto before = once("warm-up");
  // 32 receives whose sender never calls send(), and 32 sends nobody fetches: all time out.
  transfer_options opts;
  opts.deadline_ms = 100;
  std::vector<transfer_handle> storm;
  for (std::uint64_t i = 0; i < 32; ++i) {
    storm.push_back(np.decode->receive("ghost-r" + std::to_string(i), np.peer,
                                       {{np.dst_region, 4096 * (1 + i), 4096}}, opts));
    storm.push_back(np.prefill->send("ghost-s" + std::to_string(i),
                                     {{np.src_region, 4096 * (1 + i), 4096}}, opts));
  }
  for (auto& h : storm) {
    auto r = h.wait_for(patience);
    REQUIRE(r);
    CHECK(r->code == errc::timed_out);
  }
  // No zombie: every request actor ended and released its memory.
  for (auto& h : storm)
    CHECK(h.wait_released(patience));
  CHECK(health_until(*np.decode, [](auto& h) { return h.in_flight == 0; }));
  CHECK(health_until(*np.prefill, [](auto& h) { return h.in_flight == 0; }));
  auto after = once("after-storm");
  MESSAGE("F5 transfer latency before " << before << " ms, after the storm " << after << " ms");
  // Normal latency is milliseconds; a wedged path would wait for a deadline (100 ms) or hang.
  CHECK(after < 90);
  CHECK(np.decode->health().healthy);
  CHECK(np.prefill->health().healthy);
}

TEST_CASE("F13: one request timing out leaves the node healthy") {
  node_pair np{4 * 4096, with(0, 200)};
  transfer_options opts;
  opts.deadline_ms = 100;
  auto s = np.prefill->send("lonely", {{np.src_region, 0, 4096}}, opts);
  REQUIRE(s.wait_for(patience));
  CHECK(s.result()->code == errc::timed_out);
  // Watch health for three times the progress deadline: the timeout was progress, not a
  // stall, so no change to unhealthy may come.
  CHECK(np.prefill->health().healthy);
  CHECK(!health_until(*np.prefill, [](auto& h) { return !h.healthy; }, 600ms));
}

TEST_CASE("F14: a transfer that stops moving turns the node unhealthy, and progress heals it") {
  auto plan = plan_with(first_put(transport::fault_action::hold));
  node_pair np{4 * 4096, with(0, 200), plan};
  // The put is held in the prefill's transport: a transfer moving through the node that makes
  // no progress, without a deadline to end it.
  auto [s, r] = np.start("stuck", 0, 0, 4096);
  REQUIRE(plan->wait_held(1, patience));
  REQUIRE(health_until(*np.prefill, [](auto& h) { return !h.healthy; }, 10s));
  auto h = np.prefill->health();
  CHECK(h.stalled);
  CHECK(h.ms_since_progress >= 200);
  CHECK(h.in_flight == 1);
  // The decode only waits for its sender's answer: nothing moves through it, no stall there.
  CHECK(np.decode->health().healthy);
  // Progress resumes (the put goes on and the transfer completes): healthy again.
  plan->release_held();
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->status == transfer_status::succeeded);
  REQUIRE(health_until(*np.prefill, [](auto& h) { return h.healthy; }, 10s));
  CHECK(!np.prefill->health().stalled);
}

TEST_CASE("F14: requests waiting for a peer are not a stall, however many and however long") {
  auto cfg = with(0, 200);
  cfg.max_fetches_in_flight = 4;  // receives beyond it wait queued for admission
  node_pair np{64 * 4096, cfg};
  std::vector<transfer_handle> held;
  for (int i = 0; i < 64; ++i) {
    // Sends nobody fetches; receives whose sends are never offered (4 fetching, 60 queued).
    held.push_back(np.prefill->send("unfetched-" + std::to_string(i),
                                    {{np.src_region, i * 4096ull, 4096}}));
    held.push_back(np.decode->receive("unoffered-" + std::to_string(i), np.peer,
                                      {{np.dst_region, i * 4096ull, 4096}}));
  }
  REQUIRE(health_until(*np.prefill, [](auto& h) { return h.in_flight == 64; }));
  REQUIRE(health_until(*np.decode, [](auto& h) { return h.in_flight == 64; }));
  // Three progress deadlines without any request ending: neither node may call itself stalled.
  auto unhealthy = [](auto& h) { return !h.healthy || h.stalled; };
  CHECK(!health_until(*np.prefill, unhealthy, 600ms));
  CHECK(!health_until(*np.decode, unhealthy, 1ms));
  // They still end on request, each released.
  for (int i = 0; i < 64; ++i) {
    CHECK(np.prefill->cancel("unfetched-" + std::to_string(i)) != cancel_result::not_found);
    CHECK(np.decode->cancel("unoffered-" + std::to_string(i)) != cancel_result::not_found);
  }
  for (auto& h : held) {
    auto hr = h.wait_for(patience);
    REQUIRE(hr);
    CHECK(hr->status == transfer_status::cancelled);
    CHECK(h.wait_released(patience));
  }
  CHECK(np.decode->health().healthy);
}

TEST_CASE("F22: stop() returns on a thread other than the ones that started the node and called it") {
  // Engines start a node on one thread and stop it on another. CAF 0.17 pins state in each
  // thread that touches the actor system, and the system's end waited for every such thread:
  // stop() on a fresh thread waited forever. Here every kind of call is made on this thread,
  // then stop() runs on another; the bound is generous (a stop takes about a second).
  node_pair np{4 * 4096};
  auto [s, r] = np.start("before-stop", 0, 0, 4096);
  REQUIRE(r.wait_for(patience));
  auto pending = np.prefill->send("pending", {{np.src_region, 4096, 4096}});
  CHECK(np.prefill->cancel("no-such-request") == cancel_result::not_found);
  CHECK(np.decode->decline("no-such-offer", np.peer).has_value());
  CHECK(np.decode->connect("127.0.0.1", np.prefill->port()).has_value());
  auto stopped = std::async(std::launch::async, [&] {
    np.prefill->stop(std::chrono::milliseconds{200});
    np.decode->stop(std::chrono::milliseconds{200});
  });
  REQUIRE(stopped.wait_for(std::chrono::seconds{60}) == std::future_status::ready);
  auto pr = pending.wait_for(patience);
  REQUIRE(pr);
  CHECK(pr->status != transfer_status::in_flight);
  CHECK(pending.wait_released(patience));
}
