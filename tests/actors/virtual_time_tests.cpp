// The actors under virtual time: CAF's deterministic scheduler (tests/support/virtual_time.hpp)
// and a transport engine whose puts complete when the test says (tests/support/fake_engine.hpp).
// No UCX, no network, no wall-clock wait: every step below happens because the test wrote it.
#include "actors/node_core.hpp"
#include "actors/send_request_actor.hpp"
#include "actors/transport_actor.hpp"
#include "tests/support/fake_engine.hpp"
#include "tests/support/virtual_time.hpp"

#include <doctest/doctest.h>

using namespace kvferry;
using namespace std::chrono_literals;

namespace {

// One node's actors over a fake engine: the transport actor spawned as node start does (through
// node_core), and send requests spawned as node::send does (minus the sender, which is not
// running here: the request's announce goes to an invalid handle and is dropped).
struct node_rig : testing::virtual_time {
  std::shared_ptr<testing::fake_engine> engine = std::make_shared<testing::fake_engine>();
  std::shared_ptr<node_core> core = std::make_shared<node_core>(node_config{}, 1);
  transport_actor transport;

  node_rig() {
    core->engine = engine;
    node_children kids;
    kids.transport = track(spawn_transport_actor(system(), core));
    core->set_children(kids);
    transport = kids.transport;
  }
  ~node_rig() override {
    // The transport's state holds the core, the core holds the transport: break the cycle.
    core->set_children({});
  }

  struct sending {
    std::shared_ptr<detail::handle_state> handle;
    send_request_actor actor;
  };
  sending start_send(const std::string& id,
                     std::vector<std::pair<std::uint64_t, std::uint64_t>> blocks,
                     std::uint32_t deadline_ms) {
    auto st = std::make_shared<detail::handle_state>(id, core->events);
    REQUIRE(core->reserve(id, st));
    auto owner = track(spawn_send_request_actor(
      system(), send_spec{core, st, std::move(blocks), false, deadline_ms}));
    core->attach_owner(id, caf::actor_cast<caf::actor>(owner));
    return {st, owner};
  }

  // The completed/released events the request actors pushed to the poll() queue so far.
  std::vector<transfer_event> events() { return core->events->drain(); }
};

constexpr std::uint64_t peer_epoch = 0x7e57;

put_request sample_puts(std::uint64_t token) {
  put_request req;
  req.token = token;
  req.peer_epoch = peer_epoch;
  req.peer_address = {1, 2, 3};
  req.rkeys = {{0xAA, 0xBB}};
  req.items = {{0x1000, 4096, 0x900000, 0}, {0x3000, 1000, 0x901000, 0}};
  return req;
}

// A well-formed fetch of one 4096-byte block from a decode node that lives as long as `anchor`.
fetch_msg sample_fetch(const std::string& id, const caf::actor& anchor) {
  fetch_msg f;
  f.request_id = id;
  f.node_name = "decode-under-test";
  f.epoch = peer_epoch;
  f.worker_address = {4, 5, 6};
  f.rkeys = {{0xCC}};
  f.region_bases = {0x500000};
  f.region_bytes = {65536};
  f.blocks = {{0, 0x500000, 4096}};
  f.deadline_ms = 100;
  f.anchor = caf::actor_cast<caf::actor_addr>(anchor);
  return f;
}

std::size_t events_of_kind(const std::vector<transfer_event>& evs, event_kind k) {
  return static_cast<std::size_t>(
    std::count_if(evs.begin(), evs.end(), [k](const transfer_event& e) { return e.kind == k; }));
}

}  // namespace

TEST_SUITE("virtual time") {

TEST_CASE("the fake engine completes a put only when told, exactly once, and its teardown completes the rest as stopped") {
  std::vector<std::pair<std::uint64_t, errc>> seen;
  {
    testing::fake_engine eng;
    auto record = [&seen](std::uint64_t tag) {
      return [&seen, tag](errc code, const std::string&) { seen.emplace_back(tag, code); };
    };
    transport::put_batch b;
    b.peer = 9;
    b.ops = {{nullptr, 10, 0, 0}, {nullptr, 22, 0, 0}};
    auto first = eng.put(b, record(1));
    auto second = eng.put(b, record(2));
    CHECK(eng.last_put().bytes == 32);
    CHECK(eng.pending() == std::vector<std::uint64_t>{first, second});
    CHECK(seen.empty());
    eng.cancel(first);
    CHECK(eng.cancel_requested(first));
    CHECK(seen.empty());  // a cancel completes nothing by itself
    CHECK(eng.complete(first, errc::cancelled));
    CHECK_FALSE(eng.complete(first));  // exactly once
    CHECK(eng.stats().ops_completed == 1);
    auto mem = eng.allocate_memory(64);
    REQUIRE(mem);
    CHECK(mem.value()->base() != nullptr);
    CHECK(mem.value()->packed_rkey() == std::vector<std::uint8_t>{'F', 'K', 1, 0, 0, 0});
  }
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == std::pair<std::uint64_t, errc>{1, errc::cancelled});
  CHECK(seen[1] == std::pair<std::uint64_t, errc>{2, errc::stopped});
}

TEST_CASE("a put is answered only after the fake engine completes it, with the bytes of the batch") {
  node_rig rig;
  auto answer = rig.request<std::uint64_t>(rig.transport, put_atom::value, sample_puts(41));
  rig.run();
  // Posted: one batch to the peer, connected first, with both items.
  REQUIRE(rig.engine->pending_count() == 1);
  CHECK(rig.pending_timeouts() == 0);  // a request without a timeout arms no timer
  auto posted = rig.engine->last_put();
  CHECK(posted.batch.peer == peer_epoch);
  CHECK(posted.batch.ops.size() == 2);
  CHECK(posted.bytes == 5096);
  CHECK(posted.batch.rkeys == std::vector<std::vector<std::uint8_t>>{{0xAA, 0xBB}});
  REQUIRE(rig.engine->connects().size() == 1);
  CHECK(rig.engine->connects()[0].peer == peer_epoch);
  CHECK(rig.engine->connects()[0].worker_address == std::vector<std::uint8_t>{1, 2, 3});
  // However long nothing happens, there is no answer: only the engine's completion gives one.
  rig.advance_and_run(1h);
  CHECK_FALSE(answer->answered());
  REQUIRE(rig.engine->complete(posted.op));
  CHECK_FALSE(answer->answered());  // the completion is a message, handled in the next run()
  rig.run();
  REQUIRE(answer->ok());
  CHECK(answer->value() == 5096);
  CHECK(answer->answers() == 1);
}

TEST_CASE("a cancelled put reaches the engine and is answered exactly once, when the engine reports the cancel") {
  node_rig rig;
  auto answer = rig.request<std::uint64_t>(rig.transport, put_atom::value, sample_puts(42));
  rig.run();
  auto op = rig.engine->last_put().op;
  rig.send(rig.transport, cancel_atom::value, std::uint64_t{42});
  rig.run();
  CHECK(rig.engine->cancel_requested(op));
  CHECK(rig.engine->cancel_calls() == std::vector<std::uint64_t>{op});
  CHECK_FALSE(answer->answered());  // asking to cancel proves nothing about the memory

  SUBCASE("the engine cancels the puts") {
    REQUIRE(rig.engine->complete(op, errc::cancelled, "cancelled by the test"));
    rig.run();
    REQUIRE(answer->answered());
    CHECK(answer->code() == errc::cancelled);
  }
  SUBCASE("the puts win the race against the cancel") {
    REQUIRE(rig.engine->complete(op));
    rig.run();
    REQUIRE(answer->ok());
    CHECK(answer->value() == 5096);
  }
  CHECK(answer->answers() == 1);
  // The engine refuses a second completion; a late cancel finds nothing to cancel.
  CHECK_FALSE(rig.engine->complete(op, errc::cancelled));
  rig.send(rig.transport, cancel_atom::value, std::uint64_t{42});
  auto quiet = rig.request<bool>(rig.transport, quiescent_atom::value, std::uint64_t{42});
  rig.run();
  CHECK(rig.engine->cancel_calls().size() == 1);
  REQUIRE(quiet->ok());
  CHECK(quiet->value());
  CHECK(answer->answers() == 1);
}

TEST_CASE("a 100 ms deadline has not fired after 99 ms of virtual time and has after 100 ms") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x5A);
  auto s = rig.start_send("waits-for-a-peer",
                          {{reinterpret_cast<std::uint64_t>(src.data()), src.size()}}, 100);
  CHECK(rig.pending_timeouts() == 0);  // spawned, but its behaviour is built at its first run
  rig.run();  // the actor starts: its deadline is armed now, at virtual time 0
  CHECK(rig.pending_timeouts() == 1);
  CHECK(rig.next_timeout_in() == caf::timespan{100ms});
  CHECK(rig.advance_and_run(99ms) == 0);  // nothing fired, nothing ran
  CHECK(s.handle->status() == transfer_status::pending);
  CHECK_FALSE(s.handle->released());
  CHECK(rig.advance_time(1ms) == 1);
  CHECK(s.handle->status() == transfer_status::pending);  // fired, but not yet handled
  rig.run();
  auto r = s.handle->result();
  REQUIRE(r);
  CHECK(r->status == transfer_status::failed);
  CHECK(r->code == errc::timed_out);
  CHECK(s.handle->released());  // nothing was exposed to a peer: released with the result
  CHECK(rig.now() == caf::timespan{100ms});
  CHECK(rig.pending_timeouts() == 0);
}

TEST_CASE("a request timeout runs on virtual time too: a put the engine never completes times out only when the clock passes it") {
  node_rig rig;
  auto answer =
    rig.request_within<std::uint64_t>(50ms, rig.transport, put_atom::value, sample_puts(43));
  rig.run();
  REQUIRE(rig.engine->pending_count() == 1);
  rig.advance_and_run(49ms);
  CHECK_FALSE(answer->answered());
  rig.advance_and_run(1ms);
  REQUIRE(answer->answered());
  CHECK(answer->error() == caf::sec::request_timeout);
  // The transport still waits for the engine, which completes later: nobody is answered twice.
  rig.engine->complete(rig.engine->last_put().op);
  rig.run();
  CHECK(answer->answers() == 1);
}

TEST_CASE("a send whose deadline passes with puts in flight fails at once as timed out and is released exactly once, when the engine reports the puts cancelled") {
  node_rig rig;
  auto violations_before = detail::handle_state::violations();
  auto decode_node = rig.spawn_recorder();  // the fetching node's anchor
  std::vector<unsigned char> src(4096, 0x5A);
  auto s = rig.start_send("raced-by-its-deadline",
                          {{reinterpret_cast<std::uint64_t>(src.data()), src.size()}}, 100);
  rig.run();
  // The peer's fetch arrives (straight to the request actor, as the sender would route it).
  auto fetcher = rig.request<transfer_done>(s.actor, sample_fetch("raced-by-its-deadline",
                                                                   decode_node.actor));
  rig.run();
  REQUIRE(rig.engine->pending_count() == 1);
  auto op = rig.engine->last_put().op;
  CHECK(rig.engine->last_put().bytes == 4096);
  CHECK(s.handle->status() == transfer_status::in_flight);

  // The deadline passes while the puts are in UCX's hands.
  rig.advance_and_run(100ms);
  auto r = s.handle->result();
  REQUIRE(r);  // at once: the engine did not have to answer first
  CHECK(r->status == transfer_status::failed);
  CHECK(r->code == errc::timed_out);
  CHECK_FALSE(s.handle->released());  // UCX may still read the source blocks
  CHECK(rig.core->unreleased.load() == 1);
  CHECK(rig.engine->cancel_requested(op));  // the transport was asked to stop the puts
  CHECK_FALSE(fetcher->answered());         // the fetcher hears the outcome with the release

  // However long the engine takes, the memory stays pinned until it reports.
  rig.advance_and_run(10s);
  CHECK_FALSE(s.handle->released());

  REQUIRE(rig.engine->complete(op, errc::cancelled, "cancelled on request"));
  rig.run();
  CHECK(s.handle->released());
  CHECK(rig.core->unreleased.load() == 0);
  REQUIRE(fetcher->answered());
  CHECK(fetcher->code() == errc::timed_out);  // both sides agree the transfer failed
  auto evs = rig.events();
  CHECK(events_of_kind(evs, event_kind::completed) == 1);
  CHECK(events_of_kind(evs, event_kind::released) == 1);
  CHECK(detail::handle_state::violations() == violations_before);
  CHECK(rig.core->failed.load() == 1);
  CHECK(rig.core->in_flight.load() == 0);
}

TEST_CASE("when the puts complete in the instant the deadline passes, whichever reaches the request first decides, and the memory is released exactly once either way") {
  node_rig rig;
  auto violations_before = detail::handle_state::violations();
  auto decode_node = rig.spawn_recorder();
  std::vector<unsigned char> src(4096, 0x5A);
  auto s = rig.start_send("photo-finish",
                          {{reinterpret_cast<std::uint64_t>(src.data()), src.size()}}, 100);
  rig.run();
  auto fetcher = rig.request<transfer_done>(s.actor, sample_fetch("photo-finish",
                                                                   decode_node.actor));
  rig.run();
  auto op = rig.engine->last_put().op;
  rig.advance_and_run(99ms);
  // The engine's completion reaches the transport (a queued op_done message)...
  REQUIRE(rig.engine->complete(op));

  SUBCASE("the transport answers before the deadline fires: the transfer succeeded") {
    CHECK(rig.dispatch_to(rig.transport));  // its answer is queued at the request now
    CHECK(rig.advance_time(1ms) == 1);      // the deadline queues behind it
    rig.run();
    auto r = s.handle->result();
    REQUIRE(r);
    CHECK(r->status == transfer_status::succeeded);
    CHECK(r->bytes == 4096);
    REQUIRE(fetcher->ok());
    CHECK(fetcher->value().bytes == 4096);
  }
  SUBCASE("the deadline fires before the transport answers: the transfer timed out") {
    CHECK(rig.advance_time(1ms) == 1);  // the deadline is queued at the request first
    CHECK(rig.dispatch_to(s.actor));    // and handled: failed, not released, cancel sent
    CHECK(s.handle->status() == transfer_status::failed);
    CHECK_FALSE(s.handle->released());
    rig.run();  // the transport answers with the bytes; too late, the cancel finds nothing
    auto r = s.handle->result();
    REQUIRE(r);
    CHECK(r->code == errc::timed_out);
    CHECK(fetcher->code() == errc::timed_out);
    CHECK(rig.engine->cancel_calls().empty());
  }
  CHECK(s.handle->released());
  CHECK(fetcher->answers() == 1);
  auto evs = rig.events();
  CHECK(events_of_kind(evs, event_kind::completed) == 1);
  CHECK(events_of_kind(evs, event_kind::released) == 1);
  CHECK(detail::handle_state::violations() == violations_before);
  CHECK(rig.core->unreleased.load() == 0);
}

}  // TEST_SUITE
