// The request state machines, end to end between two nodes over real UCX and real CAF
// networking on loopback (both nodes in this test process; the two-process runs are in
// tests/integration). Failure-mode tests are named after their row in docs/failure-modes.md.
#include "node_pair.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

using namespace kvferry;
using namespace kvferry::test;
using namespace std::chrono_literals;


TEST_CASE("a send and a receive move scattered blocks to different block ids, byte for byte") {
  node_pair np{16 * 4096};
  auto s = np.prefill->send("r1", {{np.src_region, 4096 * 3, 4096}, {np.src_region, 0, 8192}});
  auto r = np.decode->receive("r1", np.peer,
                              {{np.dst_region, 4096 * 10, 4096}, {np.dst_region, 4096 * 5, 8192}});
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK_MESSAGE(rr->status == transfer_status::succeeded, rr->message);
  CHECK(rr->bytes == 12288);
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->status == transfer_status::succeeded);
  CHECK(std::memcmp(&np.dst[4096 * 10], &np.src[4096 * 3], 4096) == 0);
  CHECK(std::memcmp(&np.dst[4096 * 5], &np.src[0], 8192) == 0);
  // Nothing outside the destination blocks was written.
  CHECK(std::all_of(np.dst.begin(), np.dst.begin() + 4096 * 5, [](auto b) { return b == 0; }));
  CHECK(s.wait_released(patience));
  CHECK(r.wait_released(patience));
  auto h = np.decode->health();
  CHECK(h.succeeded == 1);
  CHECK(h.in_flight == 0);
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("a staged send gathers through one small staging buffer and delivers every byte") {
  node_config cfg;
  cfg.staging_slots = 1;
  cfg.staging_slot_bytes = 4096;  // smaller than a block: every block is split across chunks
  node_pair np{32 * 12288, cfg};
  std::vector<block_span> src, dst;
  for (std::uint64_t i = 0; i < 8; ++i) {
    src.push_back({np.src_region, (i * 3) * 12288, 12288});
    dst.push_back({np.dst_region, (31 - i) * 12288, 12288});
  }
  transfer_options staged;
  staged.stage_through_pool = true;
  auto s = np.prefill->send("staged", src, staged);
  auto r = np.decode->receive("staged", np.peer, dst);
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK_MESSAGE(rr->status == transfer_status::succeeded, rr->message);
  CHECK(rr->bytes == 8 * 12288);
  for (std::uint64_t i = 0; i < 8; ++i)
    CHECK(std::memcmp(&np.dst[(31 - i) * 12288], &np.src[(i * 3) * 12288], 12288) == 0);
  REQUIRE(s.wait_for(patience));
  CHECK(s.status() == transfer_status::succeeded);
  // The single staging buffer came back: a second staged transfer gets it.
  auto s2 = np.prefill->send("staged-2", {src[0]}, staged);
  auto r2 = np.decode->receive("staged-2", np.peer, {{np.dst_region, 0, 12288}});
  REQUIRE(r2.wait_for(patience));
  CHECK(r2.status() == transfer_status::succeeded);
}

TEST_CASE("a fetch that arrives before the engine's send is parked and then served") {
  node_pair np{4 * 4096};
  auto r = np.decode->receive("early", np.peer, {{np.dst_region, 0, 4096}});
  // The receive is in flight (its fetch waits at the sender) before send() is called.
  REQUIRE(r.wait_started(patience));
  REQUIRE(r.status() == transfer_status::in_flight);
  auto s = np.prefill->send("early", {{np.src_region, 4096, 4096}});
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->status == transfer_status::succeeded);
  CHECK(std::memcmp(&np.dst[0], &np.src[4096], 4096) == 0);
}

TEST_CASE("F1: handles dropped while the transfer runs: it finishes and both events still come") {
  node_pair np{64 << 20};
  std::map<std::string, std::vector<transfer_event>> seen_p, seen_d;
  {
    auto [s, r] = np.start("f1", 0, 0, 64 << 20);
  }  // every handle copy is gone while 64 MiB are still moving
  auto pe = events_for(*np.prefill, "f1", 2, seen_p);
  auto de = events_for(*np.decode, "f1", 2, seen_d);
  REQUIRE(pe.size() == 2);
  REQUIRE(de.size() == 2);
  CHECK(pe[0].kind == event_kind::completed);
  CHECK(pe[0].result.status == transfer_status::succeeded);
  CHECK(pe[1].kind == event_kind::released);
  CHECK(de[0].result.status == transfer_status::succeeded);
  CHECK(de[1].kind == event_kind::released);
  CHECK(np.dst == np.src);
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("F2: a send cancelled after the peer's fetch arrived resolves every handle once") {
  node_pair np{256 << 20};
  auto [s, r] = np.start("f2", 0, 0, 256 << 20);
  REQUIRE(s.wait_started(patience));
  auto t0 = steady::now();
  auto c = np.prefill->cancel("f2");
  auto cancel_ms = std::chrono::duration<double, std::milli>(steady::now() - t0).count();
  MESSAGE("F2 cancel: " << std::string{to_string(c)} << " in " << cancel_ms << " ms");
  // Bounded by cancel_timeout_ms (1 s) whatever the transport does; 2 s for a loaded CI.
  CHECK(cancel_ms < 2000);
  // In flight: the transport is asked to stop. (If the 256 MiB won the race, already complete.)
  CHECK((c == cancel_result::cancel_requested_in_flight || c == cancel_result::already_complete));
  auto sr = s.wait_for(patience);
  auto rr = r.wait_for(patience);
  REQUIRE(sr);
  REQUIRE(rr);
  if (sr->status == transfer_status::succeeded) {
    CHECK(rr->status == transfer_status::succeeded);
  } else {
    CHECK(sr->status == transfer_status::cancelled);
    CHECK(rr->status != transfer_status::succeeded);
    CHECK(rr->code == errc::cancelled);
  }
  std::map<std::string, std::vector<transfer_event>> seen_p, seen_d;
  auto pe = events_for(*np.prefill, "f2", 2, seen_p);
  auto de = events_for(*np.decode, "f2", 2, seen_d);
  CHECK(count_kind(pe, event_kind::completed) == 1);
  CHECK(count_kind(pe, event_kind::released) == 1);
  CHECK(count_kind(de, event_kind::completed) == 1);
  CHECK(count_kind(de, event_kind::released) == 1);
  // A second cancel finds nothing left to do.
  CHECK(np.prefill->cancel("f2") == cancel_result::already_complete);
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

namespace {

// A node pair with a single fetch place: receive "a" takes it and waits at the sender (no
// send() yet), receive "b" queues behind it.
struct one_place_taken {
  node_pair np{4 * 4096, one_place()};
  transfer_handle a, b;

  one_place_taken() {
    a = np.decode->receive("a", np.peer, {{np.dst_region, 0, 4096}});
    REQUIRE(a.wait_started(patience));
    REQUIRE(a.status() == transfer_status::in_flight);
    b = np.decode->receive("b", np.peer, {{np.dst_region, 4096, 4096}});
    CHECK(b.status() == transfer_status::pending);
  }
  static node_config one_place() {
    node_config cfg;
    cfg.max_fetches_in_flight = 1;
    return cfg;
  }
};

}  // namespace

TEST_CASE("F3: a receive cancelled while queued resolves its handle once, before any fetch") {
  one_place_taken f;
  auto& np = f.np;
  auto& a = f.a;
  auto& b = f.b;
  auto t0 = steady::now();
  CHECK(np.decode->cancel("b") == cancel_result::cancelled_before_advertise);
  MESSAGE("F3 cancel of a queued receive answered in "
          << std::chrono::duration<double, std::milli>(steady::now() - t0).count() << " ms");
  auto br = b.wait_for(patience);
  REQUIRE(br);
  CHECK(br->status == transfer_status::cancelled);
  CHECK(b.released());
  CHECK(a.status() == transfer_status::in_flight);
  // "a" is in flight: cancel asks the sender, whose answer ends it.
  CHECK(np.decode->cancel("a") == cancel_result::cancel_requested_in_flight);
  auto ar = a.wait_for(patience);
  REQUIRE(ar);
  CHECK(ar->status == transfer_status::cancelled);
  CHECK(a.wait_released(patience));
  std::map<std::string, std::vector<transfer_event>> seen;
  CHECK(events_for(*np.decode, "b", 2, seen).size() == 2);
  CHECK(events_for(*np.decode, "a", 2, seen).size() == 2);
  // The place is free again: a new receive gets through.
  np.transfer_ok("c", 0, 0, 4096);
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("F7: poll and status return promptly while a transfer is stuck on a peer that never fetches") {
  node_pair np{4 * 4096};
  auto stuck_send = np.prefill->send("never-fetched", {{np.src_region, 0, 4096}});
  auto stuck_recv = np.decode->receive("never-sent", np.peer, {{np.dst_region, 0, 4096}});
  REQUIRE(stuck_recv.wait_started(patience));
  REQUIRE(stuck_recv.status() == transfer_status::in_flight);
  // 2000 calls each; the slowest must still be far below anything an engine loop would notice.
  // Bound is 100 ms (generous for a loaded 2-core CI machine; typical is microseconds — a
  // blocking implementation would instead hang here for as long as the transfer is stuck).
  std::chrono::nanoseconds worst{0};
  for (int i = 0; i < 2000; ++i) {
    auto t0 = steady::now();
    (void)np.prefill->poll();
    (void)stuck_send.status();
    (void)stuck_recv.status();
    (void)stuck_recv.result();
    (void)np.decode->health();
    worst = std::max(worst, std::chrono::nanoseconds{steady::now() - t0});
  }
  CHECK(worst < 100ms);
  CHECK(stuck_send.status() == transfer_status::pending);
  CHECK(!stuck_recv.result().has_value());
  auto w0 = steady::now();
  CHECK(!stuck_recv.wait_for(10ms).has_value());
  CHECK(steady::now() - w0 < 2s);
  CHECK(np.prefill->cancel("never-fetched") == cancel_result::cancelled_before_advertise);
  CHECK(np.decode->cancel("never-sent") == cancel_result::cancel_requested_in_flight);
  REQUIRE(stuck_recv.wait_for(patience));
  CHECK(stuck_recv.status() == transfer_status::cancelled);
}

TEST_CASE("F12: a duplicate send or receive id is refused at once and never doubled") {
  node_pair np{4 * 4096};
  auto s1 = np.prefill->send("dup", {{np.src_region, 0, 4096}});
  auto s2 = np.prefill->send("dup", {{np.src_region, 4096, 4096}});
  auto s2r = s2.result();
  REQUIRE(s2r);
  CHECK(s2r->status == transfer_status::failed);
  CHECK(s2r->code == errc::duplicate_request_id);
  CHECK(s2r->message.find("dup") != std::string::npos);
  auto r1 = np.decode->receive("dup", np.peer, {{np.dst_region, 0, 4096}});
  auto r2 = np.decode->receive("dup", np.peer, {{np.dst_region, 8192, 4096}});
  REQUIRE(r2.result());
  CHECK(r2.result()->code == errc::duplicate_request_id);
  // The first pair is untouched by the refused duplicates: one transfer, the first blocks.
  auto r1r = r1.wait_for(patience);
  REQUIRE(r1r);
  CHECK(r1r->status == transfer_status::succeeded);
  CHECK(std::memcmp(&np.dst[0], &np.src[0], 4096) == 0);
  CHECK(std::all_of(np.dst.begin() + 8192, np.dst.end(), [](auto b) { return b == 0; }));
  std::map<std::string, std::vector<transfer_event>> seen;
  auto evs = events_for(*np.decode, "dup", 2, seen);
  CHECK(evs.size() == 2);  // the refused duplicate adds no event
  CHECK(np.decode->health().succeeded == 1);
}

TEST_CASE("bad blocks are refused with an error naming the block, and nothing is written") {
  node_pair np{4 * 4096};
  auto outside = np.prefill->send("bad1", {{np.src_region, 4 * 4096 - 100, 4096}});
  REQUIRE(outside.result());
  CHECK(outside.result()->code == errc::out_of_range);
  CHECK(outside.result()->message.find("block 0") != std::string::npos);
  auto unknown = np.decode->receive("bad2", np.peer, {{np.dst_region + 77, 0, 4096}});
  REQUIRE(unknown.result());
  CHECK(unknown.result()->code == errc::unknown_region);
  auto no_peer = np.decode->receive("bad3", peer_id{99}, {{np.dst_region, 0, 4096}});
  CHECK(no_peer.result()->code == errc::not_connected);
  // Sizes that differ between the sides fail the receive and write nothing; the offer waits on
  // (a wrong fetch must not end it) and the answer does not say what the offer is.
  auto s = np.prefill->send("mismatch", {{np.src_region, 0, 4096}});
  auto r = np.decode->receive("mismatch", np.peer, {{np.dst_region, 0, 2048}});
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->status == transfer_status::failed);
  CHECK(rr->code == errc::size_mismatch);
  CHECK(rr->message.find("4096") == std::string::npos);
  CHECK(std::all_of(np.dst.begin(), np.dst.end(), [](auto b) { return b == 0; }));
  CHECK_FALSE(s.result());
  REQUIRE(r.wait_released(patience));  // the id is free again once the receive is released
  auto again = np.decode->receive("mismatch", np.peer, {{np.dst_region, 0, 4096}});
  auto ar = again.wait_for(patience);
  REQUIRE(ar);
  CHECK_MESSAGE(ar->status == transfer_status::succeeded, ar->message);
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->status == transfer_status::succeeded);
  std::fill(np.dst.begin(), np.dst.end(), 0);
  // The ids are free again, and the node keeps serving.
  auto [ok_s, ok_r] = np.start("bad1", 0, 0, 4096);
  REQUIRE(ok_r.wait_for(patience));
  CHECK(ok_r.status() == transfer_status::succeeded);
}

TEST_CASE("cancel of an unknown id is not_found, of a finished one already_complete") {
  node_pair np{4 * 4096};
  CHECK(np.prefill->cancel("nobody") == cancel_result::not_found);
  auto [s, r] = np.start("done", 0, 0, 4096);
  REQUIRE(r.wait_for(patience));
  REQUIRE(s.wait_for(patience));
  CHECK(s.wait_released(patience));
  CHECK(np.prefill->cancel("done") == cancel_result::already_complete);
  CHECK(np.decode->cancel("done") == cancel_result::already_complete);
}

TEST_CASE("the supervisor restarts a crashed child and the node keeps serving") {
  node_pair np{4 * 4096};
  testing::crash_child(*np.decode, testing::child::receiver);
  testing::crash_child(*np.prefill, testing::child::pool);
  REQUIRE(health_until(*np.decode, [](auto& h) { return h.restarts == 1; }));
  REQUIRE(health_until(*np.prefill, [](auto& h) { return h.restarts == 1; }));
  CHECK(np.decode->health().healthy);
  np.transfer_ok("after-restart", 0, 0, 4096);
}

TEST_CASE("a receive queued at a receiver that crashes stays queued, is admitted by its restart and completes") {
  one_place_taken f;
  auto& np = f.np;
  auto& a = f.a;
  auto& b = f.b;
  testing::crash_child(*np.decode, testing::child::receiver);
  REQUIRE(health_until(*np.decode, [](auto& h) { return h.restarts == 1; }));
  auto sa = np.prefill->send("a", {{np.src_region, 0, 4096}});
  auto sb = np.prefill->send("b", {{np.src_region, 4096, 4096}});
  auto br = b.wait_for(patience);
  REQUIRE(br);
  CHECK_MESSAGE(br->status == transfer_status::succeeded, br->message);
  CHECK(std::memcmp(&np.dst[4096], &np.src[4096], 4096) == 0);
  REQUIRE(a.wait_for(patience));
  CHECK(a.status() == transfer_status::succeeded);
}

TEST_CASE("F22: stop resolves every request once and releases each once its transport is gone") {
  // Requests in each state: a send waiting for its fetch; a transfer whose put is held in the
  // prefill's transport; a receive whose fetch waits at the sender; one queued for admission.
  auto plan = plan_with(first_put(transport::fault_action::hold));
  node_config cfg;
  cfg.max_fetches_in_flight = 2;
  node_pair np{8 * 4096, cfg, plan};
  auto unfetched = np.prefill->send("unfetched", {{np.src_region, 0, 4096}});
  auto [putting_s, putting_r] = np.start("putting", 4096, 4096, 4096);
  REQUIRE(plan->wait_held(1, patience));
  auto parked = np.decode->receive("parked", np.peer, {{np.dst_region, 0, 4096}});
  auto queued = np.decode->receive("queued", np.peer, {{np.dst_region, 8192, 4096}});
  REQUIRE(health_until(*np.decode, [](auto& h) { return h.in_flight == 3; }));
  REQUIRE(health_until(*np.prefill, [](auto& h) { return h.in_flight == 2; }));

  np.decode->stop(10ms);
  np.prefill->stop(10ms);
  std::map<std::string, std::vector<transfer_event>> seen;
  auto decode_events = np.decode->poll();
  auto prefill_events = np.prefill->poll();
  for (auto* evs : {&decode_events, &prefill_events})
    for (auto& e : *evs)
      seen[e.request_id].push_back(e);
  for (auto* h : {&unfetched, &putting_s, &putting_r, &parked, &queued}) {
    CAPTURE(h->request_id());
    auto r = h->result();
    REQUIRE(r);  // resolved before stop returned
    CHECK(r->status != transfer_status::succeeded);
    CHECK(h->released());  // and released: no transport is left to touch the memory
  }
  // One completed and one released event per request and side ("putting" is on both).
  CHECK(count_kind(seen["unfetched"], event_kind::completed) == 1);
  CHECK(count_kind(seen["unfetched"], event_kind::released) == 1);
  CHECK(count_kind(seen["putting"], event_kind::completed) == 2);
  CHECK(count_kind(seen["putting"], event_kind::released) == 2);
  for (const char* id : {"parked", "queued"}) {
    CAPTURE(id);
    CHECK(count_kind(seen[id], event_kind::completed) == 1);
    CHECK(count_kind(seen[id], event_kind::released) == 1);
  }
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("stop resolves every outstanding handle and refuses new work") {
  node_pair np{4 * 4096};
  auto waiting = np.prefill->send("waits", {{np.src_region, 0, 4096}});
  np.prefill->stop(10ms);
  auto r = waiting.result();
  REQUIRE(r);
  CHECK(r->status == transfer_status::failed);
  CHECK(r->code == errc::stopped);
  auto late = np.prefill->send("late", {{np.src_region, 0, 4096}});
  REQUIRE(late.result());
  CHECK(late.result()->code == errc::stopped);
  CHECK(np.prefill->cancel("waits") == cancel_result::backend_unhealthy);
}

TEST_CASE("F23: destination blocks that overlap, or the same block twice, are refused at once naming both") {
  node_pair np{4 * 4096};
  auto twice = np.decode->receive(
    "twice", np.peer, {{np.dst_region, 0, 4096}, {np.dst_region, 4096, 4096}, {np.dst_region, 0, 4096}});
  REQUIRE(twice.result());
  CHECK(twice.result()->code == errc::invalid_argument);
  CHECK(twice.result()->message.find("blocks 0 and 2 overlap") != std::string::npos);
  auto partly = np.decode->receive("partly", np.peer,
                                   {{np.dst_region, 8192, 4096}, {np.dst_region, 4096, 4097}});
  REQUIRE(partly.result());
  CHECK(partly.result()->message.find("blocks 0 and 1 overlap") != std::string::npos);
  // Nothing reached the prefill, and the refused ids hold nothing.
  CHECK(np.prefill->health().in_flight == 0);
  CHECK(np.decode->health().in_flight == 0);
  // Adjacent blocks share no byte: accepted, and both land where they should.
  auto s = np.prefill->send("adjacent", {{np.src_region, 0, 4096}, {np.src_region, 8192, 4096}});
  auto r = np.decode->receive("adjacent", np.peer,
                              {{np.dst_region, 4096, 4096}, {np.dst_region, 0, 4096}});
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->status == transfer_status::succeeded);
  CHECK(std::memcmp(&np.dst[4096], &np.src[0], 4096) == 0);
  CHECK(std::memcmp(&np.dst[0], &np.src[8192], 4096) == 0);
  REQUIRE(s.wait_for(patience));
  // The refused ids are free for a real request.
  auto again = np.decode->receive("twice", np.peer, {{np.dst_region, 0, 4096}});
  CHECK(!again.result().has_value());
  np.decode->cancel("twice");
}

TEST_CASE("connect refuses a peer that declares another layout tag, before any transfer") {
  node_config a, b;
  a.transport = b.transport = "tcp";
  a.layout_tag = "llama-3-8b/fp16/block16/tp0";
  b.layout_tag = "llama-3-8b/fp8/block16/tp0";
  auto prefill = node::start(a);
  REQUIRE_MESSAGE(prefill, prefill.error().message);
  auto decode = node::start(b);
  REQUIRE_MESSAGE(decode, decode.error().message);
  auto refused = decode.value()->connect("127.0.0.1", prefill.value()->port());
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::incompatible_peer);
  CHECK(refused.error().message.find("'llama-3-8b/fp16/block16/tp0'") != std::string::npos);
  CHECK(refused.error().message.find("'llama-3-8b/fp8/block16/tp0'") != std::string::npos);
  // Not a peer: a receive naming it is refused as not connected.
  auto r = decode.value()->receive("x", peer_id{1}, {{1, 0, 4096}});
  REQUIRE(r.result());
  CHECK(r.result()->code == errc::not_connected);
  // The same tag connects (binary tags too).
  node_config c = a;
  c.layout_tag = std::string("\x00\x01tp=0", 6);
  a.layout_tag = c.layout_tag;
  auto p2 = node::start(a);
  auto d2 = node::start(c);
  REQUIRE(p2);
  REQUIRE(d2);
  CHECK(d2.value()->connect("127.0.0.1", p2.value()->port()).has_value());
  auto d3 = node::start(b);
  REQUIRE(d3);
  auto binary = d3.value()->connect("127.0.0.1", p2.value()->port());
  REQUIRE_FALSE(binary);
  CHECK(binary.error().message.find("6 bytes 0x0001") != std::string::npos);
}

TEST_CASE("a declined offer is released at once, a running fetch cannot be declined") {
  auto plan = plan_with(first_put(transport::fault_action::hold));
  node_pair np{4 * 4096, {}, plan};
  // Declined before any fetch: the prefill ends it, released, without a transfer.
  auto offer = np.prefill->send("prefix-hit", {{np.src_region, 0, 4096}});
  auto d = np.decode->decline("prefix-hit", np.peer);
  REQUIRE(d);
  CHECK(d.value() == cancel_result::cancelled_before_advertise);
  auto r = offer.wait_for(patience);
  REQUIRE(r);
  CHECK(r->status == transfer_status::cancelled);
  CHECK(r->message.find("declined") != std::string::npos);
  CHECK(offer.wait_released(patience));
  // Nothing to decline: an unknown id, or one already gone.
  CHECK(np.decode->decline("no-such-offer", np.peer).value() == cancel_result::not_found);
  CHECK(np.decode->decline("prefix-hit", np.peer).value() == cancel_result::not_found);
  CHECK(np.decode->decline("prefix-hit", peer_id{42}).error().code == errc::not_connected);
  // A fetch is running (its put held in the prefill's transport): the decline changes nothing.
  auto [s, g] = np.start("running", 4096, 0, 4096);
  REQUIRE(plan->wait_held(1, patience));
  auto late = np.decode->decline("running", np.peer);
  REQUIRE(late);
  CHECK(late.value() == cancel_result::not_cancellable);
  plan->release_held();
  auto gr = g.wait_for(patience);
  REQUIRE(gr);
  CHECK(gr->status == transfer_status::succeeded);
  CHECK(std::memcmp(&np.dst[0], &np.src[4096], 4096) == 0);
  CHECK(detail::handle_state::violations() == np.violations_at_start);
}

TEST_CASE("a receive may fetch part of an offer by block ranges, and bad ranges fail clearly") {
  node_pair np{8 * 4096};
  std::vector<block_span> four{{np.src_region, 0, 4096}, {np.src_region, 4096, 4096},
                               {np.src_region, 2 * 4096, 4096}, {np.src_region, 3 * 4096, 4096}};
  // The decode already has block 0 (a prefix-cache hit): it fetches blocks 1..3 only.
  auto s = np.prefill->send("partial", four);
  transfer_options rest;
  rest.fetch_ranges = {{1, 3}};
  auto r = np.decode->receive("partial", np.peer,
                              {{np.dst_region, 5 * 4096, 4096}, {np.dst_region, 6 * 4096, 4096},
                               {np.dst_region, 7 * 4096, 4096}},
                              rest);
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK_MESSAGE(rr->status == transfer_status::succeeded, rr->message);
  CHECK(rr->bytes == 3 * 4096);
  CHECK(std::memcmp(&np.dst[5 * 4096], &np.src[4096], 3 * 4096) == 0);
  CHECK(std::all_of(np.dst.begin(), np.dst.begin() + 5 * 4096, [](auto b) { return b == 0; }));
  auto sr = s.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->status == transfer_status::succeeded);
  CHECK(s.wait_released(patience));  // the whole offer, fetched blocks and skipped one alike

  // Refused at the call: ranges that do not match the destination, or are malformed.
  transfer_options two;
  two.fetch_ranges = {{0, 2}};
  auto mismatch = np.decode->receive("x1", np.peer, {{np.dst_region, 0, 4096}}, two);
  REQUIRE(mismatch.result());
  CHECK(mismatch.result()->code == errc::size_mismatch);
  transfer_options empty_range;
  empty_range.fetch_ranges = {{0, 0}};
  auto empty = np.decode->receive("x2", np.peer, {{np.dst_region, 0, 4096}}, empty_range);
  REQUIRE(empty.result());
  CHECK(empty.result()->code == errc::invalid_argument);
  // Beyond the offer: only the sender knows its size. The receive fails without learning the
  // offer's size, nothing is written, and the offer waits for a fitting fetch.
  auto s2 = np.prefill->send("beyond", four);
  transfer_options past;
  past.fetch_ranges = {{3, 2}};
  auto r2 = np.decode->receive("beyond", np.peer,
                               {{np.dst_region, 0, 4096}, {np.dst_region, 4096, 4096}}, past);
  auto r2r = r2.wait_for(patience);
  REQUIRE(r2r);
  CHECK(r2r->code == errc::size_mismatch);
  CHECK(r2r->message.find("4 blocks") == std::string::npos);
  CHECK(std::all_of(np.dst.begin(), np.dst.begin() + 5 * 4096, [](auto b) { return b == 0; }));
  CHECK_FALSE(s2.result());
  // The decode, told it cannot have those blocks, declines the offer: released at once.
  auto declined = np.decode->decline("beyond", np.peer);
  REQUIRE(declined);
  CHECK(declined.value() == cancel_result::cancelled_before_advertise);
  CHECK(s2.wait_released(patience));
}

TEST_CASE("an offer bound to a decode node fails at once when that node goes, and only it may fetch or decline it") {
  node_config cfg;
  cfg.transport = "tcp";
  node_pair np{4 * 4096, cfg};
  // The prefill connects to the decode's entry too: that is how it names the decode node.
  auto decode_as_peer = np.prefill->connect("127.0.0.1", np.decode->port());
  REQUIRE_MESSAGE(decode_as_peer, decode_as_peer.error().message);
  transfer_options bound;
  bound.bound_to = decode_as_peer.value();

  // A third node's fetch is refused; the offer waits for its node, which gets it.
  auto s = np.prefill->send("for-decode", {{np.src_region, 0, 4096}}, bound);
  auto stranger = node::start(cfg);
  REQUIRE(stranger);
  std::vector<unsigned char> other(4096, 0);
  auto other_region = stranger.value()->register_region(other.data(), other.size()).value();
  auto via = stranger.value()->connect("127.0.0.1", np.prefill->port()).value();
  auto stolen = stranger.value()->receive("for-decode", via, {{other_region, 0, 4096}});
  auto sr = stolen.wait_for(patience);
  REQUIRE(sr);
  CHECK(sr->code == errc::incompatible_peer);
  CHECK(std::all_of(other.begin(), other.end(), [](auto b) { return b == 0; }));
  CHECK_FALSE(s.result().has_value());
  // Nor may it decline it: to the stranger there is no such offer, and the offer waits on.
  auto stranger_decline = stranger.value()->decline("for-decode", via);
  REQUIRE_MESSAGE(stranger_decline, stranger_decline.error().message);
  CHECK(stranger_decline.value() == cancel_result::not_found);
  CHECK_FALSE(s.result().has_value());
  auto r = np.decode->receive("for-decode", np.peer, {{np.dst_region, 0, 4096}});
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->status == transfer_status::succeeded);
  REQUIRE(s.wait_for(patience));

  // The node it is bound to may decline it: released at once.
  auto declined = np.prefill->send("declined", {{np.src_region, 8192, 4096}}, bound);
  auto d = np.decode->decline("declined", np.peer);
  REQUIRE_MESSAGE(d, d.error().message);
  CHECK(d.value() == cancel_result::cancelled_before_advertise);
  CHECK(declined.wait_released(patience));

  // The bound node goes before fetching: the offer fails at once and is released.
  auto orphan = np.prefill->send("orphan", {{np.src_region, 4096, 4096}}, bound);
  auto t0 = steady::now();
  np.decode->stop(10ms);
  auto orr = orphan.wait_for(patience);
  REQUIRE(orr);
  MESSAGE("bound offer failed " << std::chrono::duration<double, std::milli>(steady::now() - t0).count()
                                << " ms after its decode stopped");
  CHECK(orr->code == errc::peer_failed);
  CHECK(orphan.wait_released(patience));
  // Bound to a peer this node never connected: refused at the call.
  transfer_options nowhere;
  nowhere.bound_to = peer_id{77};
  auto refused = np.prefill->send("nowhere", {{np.src_region, 0, 4096}}, nowhere);
  REQUIRE(refused.result());
  CHECK(refused.result()->code == errc::not_connected);
}

TEST_CASE("a node runs its actors on as many scheduler threads as configured, one included") {
  // Threads of this process while a lone node with `n` scheduler threads runs.
  auto threads_with = [](std::uint32_t n) {
    node_config cfg;
    cfg.transport = "tcp";
    cfg.scheduler_threads = n;
    auto started = node::start(cfg);
    REQUIRE_MESSAGE(started, started.error().message);
    std::size_t count = 0;
    for (auto& entry : std::filesystem::directory_iterator("/proc/self/task"))
      count += entry.is_directory() ? 1 : 0;
    started.value()->stop();
    return count;
  };
  auto one = threads_with(1);
  auto five = threads_with(5);
  CHECK(five == one + 4);
  node_config single;
  single.scheduler_threads = 1;  // every actor of each node on one thread: still serves
  node_pair np{4 * 4096, single};
  np.transfer_ok("one-thread", 0, 4096, 4096);
}

TEST_CASE("every result says where its time went: queued, to the first byte, transferring") {
  node_pair np{4 * 4096};
  auto s = np.prefill->send("timed", {{np.src_region, 0, 4096}});
  // The send waits for its fetch a while: that is its queue time, counted from the call (not
  // from when its actor first ran, which a loaded machine may delay).
  REQUIRE_FALSE(s.wait_for(50ms));
  auto r = np.decode->receive("timed", np.peer, {{np.dst_region, 0, 4096}});
  auto rr = r.wait_for(patience);
  auto sr = s.wait_for(patience);
  REQUIRE(rr);
  REQUIRE(sr);
  CHECK(sr->status == transfer_status::succeeded);
  CHECK(sr->timing.queue_us >= 50000);
  CHECK(sr->timing.first_byte_us > 0);
  CHECK(sr->timing.first_byte_us <= sr->timing.transfer_us);
  CHECK(sr->timing.transfer_us < 20000000);
  CHECK(rr->timing.transfer_us > 0);
  CHECK(rr->timing.first_byte_us == sr->timing.first_byte_us);  // the sender's figure
  // Ended before moving: all of its time was queue time.
  auto c = np.prefill->send("never-moved", {{np.src_region, 0, 4096}});
  REQUIRE_FALSE(c.wait_for(20ms));
  np.prefill->cancel("never-moved");
  auto cr = c.wait_for(patience);
  REQUIRE(cr);
  CHECK(cr->timing.queue_us >= 20000);
  CHECK(cr->timing.first_byte_us == 0);
  CHECK(cr->timing.transfer_us == 0);
}

TEST_CASE("a peer whose node stops is forgotten on its own: its id answers not_connected") {
  node_pair np{4 * 4096};
  REQUIRE(np.decode->health().peers == 1);
  np.prefill->stop();
  // The connection's loss ends CAF's proxy of the peer's entry, which takes it off the list.
  REQUIRE(np.decode->wait_health([](const health_snapshot& h) { return h.peers == 0; }, patience));
  auto refused = np.decode->receive("after", np.peer, {{np.dst_region, 0, 4096}});
  REQUIRE(refused.result());
  CHECK(refused.result()->code == errc::not_connected);
  CHECK(np.decode->disconnect(np.peer) == errc::not_connected);
  CHECK(np.decode->health().healthy);
}

TEST_CASE("at max_peers, connecting one more forgets the least recently used peer, which can connect again") {
  node_config cfg;
  cfg.max_peers = 1;
  node_pair np{4 * 4096, cfg};
  cfg.transport = "tcp";
  auto other = node::start(cfg);
  REQUIRE_MESSAGE(other, other.error().message);
  auto to_other = np.decode->connect("127.0.0.1", other.value()->port());
  REQUIRE(to_other);
  CHECK(to_other.value().value != np.peer.value);
  CHECK(np.decode->health().peers == 1);
  auto refused = np.decode->receive("forgotten", np.peer, {{np.dst_region, 0, 4096}});
  REQUIRE(refused.result());
  CHECK(refused.result()->code == errc::not_connected);
  // The forgotten peer connects again (and the other is forgotten in turn): transfers work.
  auto back = np.decode->connect("127.0.0.1", np.prefill->port());
  REQUIRE(back);
  CHECK(back.value().value != np.peer.value);
  CHECK(back.value().value != to_other.value().value);
  auto s = np.prefill->send("again", {{np.src_region, 0, 4096}});
  auto r = np.decode->receive("again", back.value(), {{np.dst_region, 0, 4096}});
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->status == transfer_status::succeeded);
  CHECK(std::memcmp(np.dst.data(), np.src.data(), 4096) == 0);
  CHECK(s.wait_released(patience));
  CHECK(np.decode->health().peers == 1);
}

TEST_CASE("connecting to the same node again gives the same peer id, and a disconnected id no longer works while a transfer already running with it ends normally") {
  node_pair np{4 * 4096};
  auto again = np.decode->connect("127.0.0.1", np.prefill->port());
  REQUIRE(again);
  CHECK(again.value().value == np.peer.value);  // the peer list does not grow
  // A transfer already fetching from the peer when it is forgotten still finishes.
  auto sent = np.prefill->send("before", {{np.src_region, 0, 4096}});
  auto running = np.decode->receive("before", np.peer, {{np.dst_region, 0, 4096}});
  REQUIRE(running.wait_started(patience));
  CHECK(np.decode->disconnect(np.peer) == errc::none);
  CHECK(np.decode->disconnect(np.peer) == errc::not_connected);
  CHECK(np.decode->disconnect(peer_id{0}) == errc::not_connected);
  CHECK(np.decode->disconnect(peer_id{99}) == errc::not_connected);
  auto done = running.wait_for(patience);
  REQUIRE(done);
  CHECK(done->status == transfer_status::succeeded);
  CHECK(std::memcmp(np.dst.data(), np.src.data(), 4096) == 0);
  // The forgotten id is refused at once, naming it.
  auto refused = np.decode->receive("after", np.peer, {{np.dst_region, 4096, 4096}});
  REQUIRE(refused.result());
  CHECK(refused.result()->code == errc::not_connected);
  CHECK(np.decode->metrics().find("kvferry_peers 0\n") != std::string::npos);
  // Connecting again gives a new id that works.
  auto fresh = np.decode->connect("127.0.0.1", np.prefill->port());
  REQUIRE(fresh);
  CHECK(fresh.value().value != np.peer.value);
  np.prefill->send("after-reconnect", {{np.src_region, 4096, 4096}});
  auto r = np.decode->receive("after-reconnect", fresh.value(), {{np.dst_region, 4096, 4096}});
  auto rr = r.wait_for(patience);
  REQUIRE(rr);
  CHECK(rr->status == transfer_status::succeeded);
  CHECK(sent.wait_released(patience));
}
