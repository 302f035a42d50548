// Faults injected over the real transport (tests/support/fault_plan.hpp): operations held, thrown,
// failed. Tests are named after their row in docs/failure-modes.md.
#include "node_pair.hpp"

using namespace kvferry;
using namespace kvferry::test;
using namespace std::chrono_literals;

namespace {

// A staged send while every staging slot is held: it gets none, and its deadline (300 ms)
// bounds the wait.
void check_no_slot_for(node_pair& np, const transfer_options& staged) {
  transfer_options short_staged = staged;
  short_staged.deadline_ms = 300;
  auto [s, r] = np.start("no-slot", 4096, 4096, 4096, short_staged);
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->code == errc::timed_out);
  np.decode->cancel("no-slot");
  REQUIRE(r.wait_for(patience));
}

// A node pair whose pool has one staging slot and whose first put is held in the transport,
// with the options of a staged send.
struct one_slot_first_put_held {
  std::shared_ptr<transport::fault_plan> plan = plan_with(first_put(transport::fault_action::hold));
  node_pair np{4 * 4096, one_slot(), plan};
  transfer_options staged = staged_options();

  static node_config one_slot() {
    node_config cfg;
    cfg.staging_slots = 1;
    return cfg;
  }
  static transfer_options staged_options() {
    transfer_options o;
    o.stage_through_pool = true;
    return o;
  }
};

}  // namespace

TEST_CASE("F10: a non-std exception thrown in the transport fails that request clearly and the node keeps serving") {
  for (auto action : {transport::fault_action::throw_other, transport::fault_action::throw_std}) {
    auto plan = plan_with(first_put(action));
    node_pair np{4 * 4096, {}, plan};
    auto [s, r] = np.start("boom", 0, 0, 4096);
    auto sr = s.wait_for(patience);
    REQUIRE(sr);
    CHECK(sr->status == transfer_status::failed);
    CHECK(sr->code == errc::internal_error);
    CHECK(sr->message.find(action == transport::fault_action::throw_other
                             ? "not a std::exception"
                             : "std::runtime_error") != std::string::npos);
    auto rr = r.wait_for(patience);
    REQUIRE(rr);
    CHECK(rr->status == transfer_status::failed);
    CHECK(plan->applied() == 1);
    // The same node serves the next transfer, without a restart.
    np.transfer_ok("after", 4096, 4096, 4096);
    CHECK(np.prefill->health().restarts == 0);
    CHECK(np.prefill->health().healthy);
  }
}

TEST_CASE("F8: after a cancel, memory is released only once the late completion came") {
  auto plan = plan_with(first_put(transport::fault_action::hold));
  node_pair np{4 * 4096, {}, plan};
  auto [s, r] = np.start("late", 0, 0, 4096);
  REQUIRE(plan->wait_held(1, patience));  // the put is held before UCX
  CHECK(np.prefill->cancel("late") == cancel_result::cancel_requested_in_flight);
  // The transport has not completed the operation: nothing may be released on either side.
  // (waiting for the released event, which must not come within the window)
  CHECK(!s.wait_released(300ms));
  CHECK(!r.released());
  plan->release_held();  // the late operation runs and completes
  CHECK(s.wait_released(patience));
  CHECK(r.wait_released(patience));
  auto sr = s.result();
  REQUIRE(sr);
  // It was cancelled, or the held put completed first: either way one terminal event each.
  CHECK((sr->status == transfer_status::cancelled || sr->status == transfer_status::succeeded));
  std::map<std::string, std::vector<transfer_event>> seen;
  auto evs = events_for(*np.prefill, "late", 2, seen);
  CHECK(count_kind(evs, event_kind::completed) == 1);
  CHECK(count_kind(evs, event_kind::released) == 1);
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("F11: a request ended in flight by its deadline releases exactly once, after the late completion") {
  auto plan = plan_with(first_put(transport::fault_action::hold));
  node_pair np{4 * 4096, {}, plan};
  transfer_options opts;
  // Long enough for the fetch to arrive and the put to be posted even on a slow (sanitized)
  // build: the deadline must fire while the put is held, not before it was posted.
  opts.deadline_ms = 1500;
  auto [s, r] = np.start("ended", 0, 0, 4096, opts);
  REQUIRE(plan->wait_held(1, patience));
  // The deadline ends it while the put is held: terminal now, memory still pinned.
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->code == errc::timed_out);
  CHECK(!s.released());
  CHECK(!s.wait_released(200ms));
  CHECK(np.prefill->health().unreleased == 1);
  plan->release_held();
  CHECK(s.wait_released(patience));
  CHECK(np.prefill->health().unreleased == 0);
  // The decode side agrees that the transfer failed (it timed out at the sender).
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->code == errc::timed_out);
  std::map<std::string, std::vector<transfer_event>> seen;
  auto evs = events_for(*np.prefill, "ended", 2, seen);
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].kind == event_kind::completed);
  CHECK(evs[1].kind == event_kind::released);
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("F9: when the transport dies mid-operation the sender's memory is quarantined until the engine completes the orphaned put, and the receiver closes its window and releases") {
  auto plan = plan_with(first_put(transport::fault_action::hold));
  node_pair np{4 * 4096, {}, plan};
  auto [s, r] = np.start("orphan", 0, 0, 4096);
  REQUIRE(plan->wait_held(1, patience));
  testing::crash_child(*np.prefill, testing::child::transport);
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->status == transfer_status::failed);
  CHECK(sr->code == errc::backend_unhealthy);
  // The put is still held in the engine: no proof of quiescence yet, so not released, and
  // counted.
  CHECK(!s.wait_released(200ms));
  CHECK(np.prefill->health().unreleased == 1);
  // The fetcher hears it now, not at its 30 s deadline. The held put may still be sent, but
  // the receive's window is closed: its destination is released, nothing quarantined (F20).
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK_MESSAGE(rr->status == transfer_status::failed, rr->message);
  CHECK(r.wait_released(patience));
  CHECK(np.decode->health().unreleased == 0);
  REQUIRE(health_until(*np.prefill, [](auto& h) { return h.restarts == 1; }));
  const auto before = np.dst;
  plan->release_held();  // the orphaned put is sent now: the decode refuses it, writing nothing
  REQUIRE(health_until(*np.decode, [](auto& h) { return h.writes_refused >= 1; }));
  CHECK(np.dst == before);
  // Its completion reached the op ledger, which outlived the crashed transport actor: that is
  // the proof, and the source is released (it used to stay quarantined until stop).
  CHECK(s.wait_released(patience));
  CHECK(np.prefill->health().unreleased == 0);
  CHECK(np.prefill->health().healthy);
  // The restarted transport serves new transfers.
  np.transfer_ok("next", 4096, 4096, 4096);
}

TEST_CASE("an injected put failure fails both sides with the injected code and releases") {
  auto rule = first_put(transport::fault_action::fail);
  rule.code = errc::peer_failed;
  auto plan = plan_with(rule);
  node_pair np{4 * 4096, {}, plan};
  auto [s, r] = np.start("fails", 0, 0, 4096);
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->code == errc::peer_failed);
  CHECK(s.wait_for(patience)->code == errc::peer_failed);
  CHECK(s.wait_released(patience));
  CHECK(r.wait_released(patience));
  CHECK(std::all_of(np.dst.begin(), np.dst.end(), [](auto b) { return b == 0; }));
}

TEST_CASE("a staging slot that lost its transport mid-put stays out of service until the engine completes the put, then serves again") {
  auto plan = plan_with(first_put(transport::fault_action::hold));
  node_config cfg;
  cfg.staging_slots = 1;
  cfg.quarantine_budget = 1;  // the quarantined request fills it while the put is held
  node_pair np{4 * 4096, cfg, plan};
  transfer_options staged;
  staged.stage_through_pool = true;
  auto [s, r] = np.start("staged-orphan", 0, 0, 4096, staged);
  REQUIRE(plan->wait_held(1, patience));  // the put from the only staging slot is held
  CHECK(np.prefill->health().healthy);
  testing::crash_child(*np.prefill, testing::child::transport);
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK_MESSAGE(sr->code == errc::backend_unhealthy, sr->message);
  REQUIRE(health_until(*np.prefill, [](auto& h) { return h.restarts == 1; }));
  auto h = np.prefill->health();
  INFO(h.to_string());
  CHECK(h.unreleased == 1);
  CHECK(h.quarantine_full);
  CHECK(!h.healthy);
  // Meanwhile the slot is still held (UCX may read it): a staged send finds none in time.
  check_no_slot_for(np, staged);
  // The engine completes the orphaned put: the request is released, the slot comes back (not
  // poisoned), and health is whole again.
  plan->release_held();
  CHECK(s.wait_released(patience));
  REQUIRE(health_until(*np.prefill, [](auto& h) { return h.unreleased == 0 && h.healthy; }));
  CHECK(np.prefill->health().poisoned == 0);
  for (int i = 0; i < 3; ++i)
    np.transfer_ok("staged-next-" + std::to_string(i), 4096, 4096, 4096, staged);
}

TEST_CASE("F6: a staged send cancelled while it waits for the only staging slot ends at once") {
  one_slot_first_put_held f;
  auto& [plan, np, staged] = f;
  // The first staged send holds the only slot (its put is held).
  auto [s1, r1] = np.start("holder", 0, 0, 4096, staged);
  REQUIRE(plan->wait_held(1, patience));
  // The second waits for the slot; cancelling it ends it without waiting for the slot.
  auto [s2, r2] = np.start("waiter", 4096, 4096, 4096, staged);
  REQUIRE(s2.wait_started(patience));
  REQUIRE(s2.status() == transfer_status::in_flight);
  auto t0 = steady::now();
  np.prefill->cancel("waiter");
  auto s2r = s2.wait_for(patience);
  REQUIRE(s2r);
  CHECK(s2r->status == transfer_status::cancelled);
  CHECK(steady::now() - t0 < 5s);  // not the 30 s staging wait (5 s: loaded CI)
  CHECK(s2.wait_released(patience));
  // The holder finishes once its put goes on; the slot comes back and serves a new send.
  plan->release_held();
  REQUIRE(r1.wait_for(patience));
  CHECK(r1.status() == transfer_status::succeeded);
  np.transfer_ok("third", 8192, 8192, 4096, staged);
}

TEST_CASE("a lease whose holder dies mid-put is held until the put completes, and only then serves another staged send") {
  one_slot_first_put_held f;
  auto& [plan, np, staged] = f;
  // Holder killed while its put from the staging slot is held in the transport.
  auto [s, r] = np.start("killed", 0, 0, 4096, staged);
  REQUIRE(plan->wait_held(1, patience));
  testing::crash_request(*np.prefill, "killed");
  REQUIRE(s.wait_for(patience));
  CHECK(s.result()->code == errc::internal_error);
  CHECK(!s.released());
  // While the put is in flight the slot is not handed out.
  check_no_slot_for(np, staged);
  CHECK(np.prefill->health().unreleased == 1);
  // The put completes: the pool learns it from the op ledger and the slot serves again; the
  // request's source blocks are released the same way, not kept until the node stops.
  plan->release_held();
  CHECK(s.wait_released(patience));
  np.transfer_ok("after", 8192, 8192, 4096, staged);
  CHECK(np.prefill->health().poisoned == 0);
  CHECK(np.prefill->health().unreleased == 0);
}

TEST_CASE("a send whose actor dies with nothing in flight is released at once, not at stop") {
  // A layer-wise send whose layer is not ready: fetched (its actor exists from the fetch on),
  // nothing posted yet.
  node_pair np{4 * 4096};
  transfer_options layered;
  layered.layer_blocks = {1};
  auto [s, r] = np.start("waits-for-a-layer", 0, 0, 4096, layered);
  REQUIRE(s.wait_started(patience));  // the fetch came: the offer has an actor now
  testing::crash_request(*np.prefill, "waits-for-a-layer");
  REQUIRE(s.wait_for(patience));
  CHECK(s.result()->code == errc::internal_error);
  CHECK(s.wait_released(patience));  // no copy or put of it was ever posted
  CHECK(np.prefill->health().unreleased == 0);
  REQUIRE(r.wait_for(patience));
  CHECK(r.result()->status == transfer_status::failed);
  // The receive's id is free once it is released too, which its owner does just after the
  // terminal event (between the two, a preempted thread once let the reuse below be refused).
  CHECK(r.wait_released(patience));
  // Its id is free again, and the node serves.
  np.transfer_ok("waits-for-a-layer", 0, 0, 4096);
}

TEST_CASE("a lease whose holder dies with nothing in flight is given back, not poisoned") {
  node_config cfg;
  cfg.staging_slots = 1;
  auto plan = std::make_shared<transport::fault_plan>();
  transport::fault_rule slow;  // every put waits 300 ms before reaching UCX
  slow.nth = 0;
  slow.action = transport::fault_action::delay;
  slow.delay_ms = 300;
  plan->add(slow);
  node_pair np{4 * 4096, cfg, plan};
  transfer_options staged;
  staged.stage_through_pool = true;
  // Two staged sends, one slot: the second waits for the slot while the first puts (slowly).
  auto [s1, r1] = np.start("first", 0, 0, 4096, staged);
  auto [s2, r2] = np.start("second", 4096, 4096, 4096, staged);
  REQUIRE(r1.wait_for(patience));
  REQUIRE(r2.wait_for(patience));
  CHECK(r1.status() == transfer_status::succeeded);
  CHECK(r2.status() == transfer_status::succeeded);
  CHECK(np.prefill->health().poisoned == 0);
}
