// The actors under virtual time: CAF's deterministic scheduler (tests/support/virtual_time.hpp),
// a transport engine whose puts complete when the test says (tests/support/fake_engine.hpp) and
// a copy engine likewise (fake_copy_engine.hpp). No UCX, no network, no wall-clock wait: every
// step below happens because the test wrote it, so each race runs in exactly the order named.
// The two-process tests (integration/, request_tests.cpp, fault_tests.cpp) stay the proof over
// real UCX and CAF networking; these pin the interleavings that real processes hit by chance.
#include "actors/buffer_pool_actor.hpp"
#include "actors/event_sink.hpp"
#include "actors/handle_state.hpp"
#include "actors/offer_book.hpp"
#include "actors/receiver_actor.hpp"
#include "actors/recv_request_actor.hpp"
#include "actors/send_request_actor.hpp"
#include "actors/sender_actor.hpp"
#include "actors/transport_actor.hpp"
#include "actors/transport_services.hpp"
#include "tests/support/fake_copy_engine.hpp"
#include "tests/support/fake_engine.hpp"
#include "tests/support/virtual_time.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <utility>

using namespace kvferry;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t peer_epoch = 0x7e57;

// One node's actors over fake engines, wired as a node wires them (minus the supervisor, whose
// tick is not under test here): transport, buffer pool, sender, receiver, and request actors
// spawned as node::send / node::receive spawn them. A receive fetches from this node's own
// sender, so a whole transfer runs inside the rig.
struct node_rig : testing::virtual_time {
  std::shared_ptr<testing::fake_engine> engine = std::make_shared<testing::fake_engine>();
  std::shared_ptr<testing::fake_copy_engine> copier = std::make_shared<testing::fake_copy_engine>();
  std::shared_ptr<child_directory> children = std::make_shared<child_directory>();
  std::shared_ptr<node_health> health = std::make_shared<node_health>(1024);
  std::shared_ptr<watch_index> watches = std::make_shared<watch_index>();
  std::shared_ptr<op_ledger> ledger;  // the transport services' (set in the constructor)
  // Request ids as the prefill side and as the decode side know them (one id is both a send and
  // a receive here, as it is on two nodes).
  std::shared_ptr<request_registry> registry = std::make_shared<request_registry>();
  std::shared_ptr<request_registry> recv_registry = std::make_shared<request_registry>();
  std::shared_ptr<detail::event_sink> sink = std::make_shared<detail::event_sink>();
  std::shared_ptr<kvferry::staging_slots> staging = std::make_shared<kvferry::staging_slots>();
  std::shared_ptr<offer_book> book = std::make_shared<offer_book>();
  std::shared_ptr<admission_queue> admissions = std::make_shared<admission_queue>();
  transport_actor transport;
  buffer_pool_actor pool;
  sender_actor sender;
  receiver_actor receiver;
  testing::recorder decode_node;  // the fetching node's anchor

  explicit node_rig(std::uint32_t max_fetches = 4, std::uint32_t staging_slots = 1,
                    std::uint64_t slot_bytes = 4096)
      : testing::virtual_time([](caf::actor_system_config& cfg) {
          cfg.add_message_types<caf::id_block::kvferry>();
        }) {
    auto services = std::make_shared<transport_services>();
    services->engine = engine;
    services->copier = copier;
    ledger = services->ledger;
    transport = track(spawn_transport_actor(system(), transport_spec{services, health}));
    children->set({transport, {}, {}, {}});
    pool = track(spawn_buffer_pool_actor(
      system(), pool_spec{staging_slots, slot_bytes, staging, children, health, ledger}));
    sender = track(spawn_sender_actor(system(), sender_spec{"rig", 60000, {}, registry, {}, 65536, 4096, health, book}));
    receiver = track(spawn_receiver_actor(system(), receiver_spec{max_fetches, admissions,
                                                                  recv_registry}));
    children->set({transport, pool, sender, receiver});
    decode_node = spawn_recorder();
    run();  // the pool has the transport allocate its staging buffers
    REQUIRE(staging->buffers.size() == staging_slots);
  }
  ~node_rig() override {
    children->set({});  // the pool's spec holds the directory, the directory the pool
  }

  struct started {
    std::shared_ptr<detail::handle_state> handle;
    caf::actor actor;  // a send's started by start_send; else its owner from the registry
    bool receive = false;
  };
  request_context context(const std::shared_ptr<request_registry>& ids, const std::string& id,
                          std::uint32_t deadline_ms) {
    auto st = std::make_shared<detail::handle_state>(id, sink);
    REQUIRE(ids->reserve(id, st));
    return request_context{st, ids, health, children, deadline_ms, watches, ledger};
  }
  started start_send(const std::string& id, std::vector<desc> blocks, std::uint32_t deadline_ms,
                     bool staged = false) {
    auto ctx = context(registry, id, deadline_ms);
    auto h = ctx.handle;
    auto owner = track(spawn_send_request_actor(system(), send_spec{ctx, std::move(blocks), staged, {}},
                                                  nullptr, deadline_ms));
    registry->attach_owner(id, caf::actor_cast<caf::actor>(owner), true);
    return {h, caf::actor_cast<caf::actor>(owner), false};
  }
  // A send as node::send makes it: an offer in the book, announced to the sender; no actor
  // until a fetch fits (`actor` stays invalid).
  started offer(const std::string& id, std::vector<desc> blocks, std::uint32_t deadline_ms,
                sender_actor bound = {}, std::vector<std::uint32_t> layer_blocks = {}) {
    auto ctx = context(registry, id, deadline_ms);
    auto h = ctx.handle;
    h->set_layers(static_cast<std::uint32_t>(layer_blocks.size()));
    registry->attach_owner(id, caf::actor{}, true);
    auto o = make_held(send_spec{ctx, std::move(blocks), false, std::move(bound),
                                  std::move(layer_blocks)},
                        request_side::send, clock().now());
    REQUIRE(book->add(o));
    send(sender, announce_atom::value, id);
    return {h, {}, false};
  }
  // The send-request actor the sender spawned for `id` (registered under the book's lock).
  caf::actor owner_of(const std::string& id) {
    return registry->owner_of(id, nullptr);
  }
  // Runs once, when the next receive reads the worker address (its window just opened).
  std::function<void()> before_address_read;
  // A receive into `blocks` (one destination region [base, base + bytes), its rkey
  // fake_rkey(0xCC)).
  started start_recv(const std::string& id, std::vector<desc> blocks, std::uint64_t base,
                     std::uint64_t bytes, std::uint32_t deadline_ms) {
    auto ctx = context(recv_registry, id, deadline_ms);
    auto h = ctx.handle;
    auto header = std::make_shared<fetch_msg>();
    header->node_name = "rig";
    header->epoch = peer_epoch;
    header->anchor = caf::actor_cast<caf::actor_addr>(decode_node.actor);
    auto regions = std::make_shared<region_table>(65536);
    auto region = regions->add(region_info{base, bytes, memory_kind::host, testing::fake_rkey(0xCC)});
    for (auto& b : blocks)
      b.key = region;
    // Queued for admission as node::receive queues it: the receiver spawns its actor.
    auto q = make_held(recv_spec{ctx, sender, std::move(blocks), {}, std::move(header),
                                 std::move(regions), engine->windows(), {},
                                 [this] {
                                   if (auto before = std::exchange(before_address_read, nullptr))
                                     before();
                                   return engine->worker_address();
                                 }},
                       request_side::receive, clock().now());
    REQUIRE(admissions->add(q));
    send(receiver, admit_atom::value);
    return {h, {}, true};
  }
  // Cancels as node::cancel does: a send in the book or a receive in the queue ends there,
  // else the request's owner is asked.
  std::shared_ptr<const testing::reply<cancel_result>> cancel(const started& r) {
    const auto& id = r.handle->request_id();
    std::optional<transfer_result> ended;
    if (!r.receive) {
      if (auto o = book->take(id)) {
        end_held(std::move(*o), make_result(transfer_status::cancelled, errc::cancelled));
        ended.emplace();
      }
    } else if (auto q = admissions->take(id)) {
      end_held(std::move(*q), make_result(transfer_status::cancelled, errc::cancelled));
      ended.emplace();
    }
    if (ended) {
      auto answer = std::make_shared<testing::reply<cancel_result>>();
      answer->set_value(cancel_result::cancelled_before_advertise);
      return answer;
    }
    auto owner = r.actor ? r.actor : (r.receive ? recv_registry : registry)->owner_of(id, nullptr);
    return this->request<cancel_result>(owner, cancel_atom::value);
  }

  // The completed/released events the request actors pushed to the poll() queue so far.
  std::vector<transfer_event> events() { return sink->drain(); }
  health_snapshot snapshot() const { return health->snapshot(); }
};

// A block of `mem` as a descriptor (key: region 1).
desc block_of(const std::vector<unsigned char>& mem) {
  return desc{addr_of(mem.data()), mem.size(), 1};
}

put_request sample_puts(std::uint64_t token) {
  put_request req;
  req.token = token;
  req.peer_epoch = peer_epoch;
  req.peer_address = {1, 2, 3};
  req.rkeys = {{0xAA, 0xBB}};
  req.ops = {{0x1000, {0x900000, 4096, 0}}, {0x3000, {0x901000, 1000, 0}}};
  return req;
}

// A well-formed fetch of one 4096-byte block from a decode node that lives as long as `anchor`.
fetch_msg sample_fetch(const std::string& id, const caf::actor& anchor) {
  fetch_msg f;
  f.request_id = id;
  f.node_name = "decode-under-test";
  f.epoch = peer_epoch;
  f.worker_address = testing::fake_worker_address(456);
  f.rkeys = {testing::fake_rkey(0xCC)};
  f.region_bases = {0x500000};
  f.region_bytes = {65536};
  f.blocks = {{0x500000, 4096, 0}};
  f.deadline_ms = 100;
  f.anchor = caf::actor_cast<caf::actor_addr>(anchor);
  return f;
}

// A send of `src` with `deadline_ms`, and the peer's fetch for it delivered straight to the
// request actor (as the sender would route it): the puts are in the engine's hands after this.
std::pair<node_rig::started, std::shared_ptr<const testing::reply<transfer_done>>> send_and_fetch(
  node_rig& rig, const std::string& id, const std::vector<unsigned char>& src,
  std::uint32_t deadline_ms) {
  auto s = rig.start_send(id, {block_of(src)}, deadline_ms);
  rig.run();
  auto fetcher = rig.request<transfer_done>(s.actor, sample_fetch(id, rig.decode_node.actor),
                                            caf::actor_cast<caf::actor_addr>(rig.decode_node.actor));
  rig.run();
  return {s, fetcher};
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
    b.ops = {{0, {0, 10, 0}}, {0, {0, 22, 0}}};
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
    CHECK(mem.value()->packed_rkey() == testing::fake_rkey(1));
  }
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == std::pair<std::uint64_t, errc>{1, errc::cancelled});
  CHECK(seen[1] == std::pair<std::uint64_t, errc>{2, errc::stopped});
}

TEST_CASE("a put is answered only after the fake engine completes it, with the bytes of the batch") {
  node_rig rig;
  auto answer = rig.request<put_done>(rig.transport, put_atom::value, sample_puts(41));
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
  CHECK(answer->value().bytes == 5096);
  CHECK(answer->answers() == 1);
}

TEST_CASE("a cancelled put reaches the engine and is answered exactly once, when the engine reports the cancel") {
  node_rig rig;
  auto answer = rig.request<put_done>(rig.transport, put_atom::value, sample_puts(42));
  rig.run();
  auto op = rig.engine->last_put().op;
  rig.send(rig.transport, cancel_atom::value, std::uint64_t{42});
  rig.run();
  CHECK(rig.engine->cancel_requested(op));
  CHECK(rig.engine->cancel_calls() == std::vector<std::uint64_t>{op});
  CHECK_FALSE(answer->answered());  // asking to cancel proves nothing about the memory
  CHECK(rig.ledger->in_flight(42));

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
    CHECK(answer->value().bytes == 5096);
  }
  CHECK(answer->answers() == 1);
  // The engine refuses a second completion; a late cancel finds nothing to cancel.
  CHECK_FALSE(rig.engine->complete(op, errc::cancelled));
  rig.send(rig.transport, cancel_atom::value, std::uint64_t{42});
  auto quiet = rig.request<bool>(rig.transport, quiescent_atom::value, std::uint64_t{42});
  rig.run();
  CHECK(rig.engine->cancel_calls().size() == 1);
  CHECK(!rig.ledger->in_flight(42));  // the completion was recorded in the ledger too
  REQUIRE(quiet->ok());
  CHECK(quiet->value());
  CHECK(answer->answers() == 1);
}

TEST_CASE("F4 (virtual time): a send no peer fetches times out at its 100 ms deadline, not after 99 ms, and releases its blocks") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x5A);
  auto s = rig.start_send("waits-for-a-peer",
                          {block_of(src)}, 100);
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
    rig.request_within<put_done>(50ms, rig.transport, put_atom::value, sample_puts(43));
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

TEST_CASE("F11 (virtual time): a send whose deadline passes with puts in flight fails at once as timed out and is released exactly once, when the engine reports the puts cancelled") {
  node_rig rig;
  auto violations_before = detail::handle_state::violations();
  std::vector<unsigned char> src(4096, 0x5A);
  auto [s, fetcher] = send_and_fetch(rig, "raced-by-its-deadline", src, 100);
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
  CHECK(rig.snapshot().unreleased == 1);
  CHECK(rig.engine->cancel_requested(op));  // the transport was asked to stop the puts
  CHECK_FALSE(fetcher->answered());         // the fetcher hears the outcome with the release

  // However long the engine takes, the memory stays pinned until it reports.
  rig.advance_and_run(10s);
  CHECK_FALSE(s.handle->released());

  REQUIRE(rig.engine->complete(op, errc::cancelled, "cancelled on request"));
  rig.run();
  CHECK(s.handle->released());
  CHECK(rig.snapshot().unreleased == 0);
  REQUIRE(fetcher->answered());
  CHECK(fetcher->code() == errc::timed_out);  // both sides agree the transfer failed
  auto evs = rig.events();
  CHECK(events_of_kind(evs, event_kind::completed) == 1);
  CHECK(events_of_kind(evs, event_kind::released) == 1);
  CHECK(detail::handle_state::violations() == violations_before);
  CHECK(rig.snapshot().failed == 1);
  CHECK(rig.snapshot().in_flight == 0);
}

TEST_CASE("when the puts complete in the instant the deadline passes, whichever reaches the request first decides, and the memory is released exactly once either way") {
  node_rig rig;
  auto violations_before = detail::handle_state::violations();
  std::vector<unsigned char> src(4096, 0x5A);
  auto [s, fetcher] = send_and_fetch(rig, "photo-finish", src, 100);
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
  CHECK(rig.snapshot().unreleased == 0);
}

// -- whole transfers inside one rig: recv-request -> sender -> send-request -> transport -------

namespace {

// A send of `src` and a receive of it into `dst`, run until the puts are in the engine's hands.
struct transfer_in_flight {
  node_rig::started send, recv;
  std::uint64_t op = 0;
};
transfer_in_flight start_transfer(node_rig& rig, const std::string& id,
                                  const std::vector<unsigned char>& src,
                                  const std::vector<unsigned char>& dst,
                                  std::uint32_t send_deadline_ms = 30000,
                                  std::uint32_t recv_deadline_ms = 30000) {
  transfer_in_flight t;
  t.send = rig.start_send(id, {block_of(src)}, send_deadline_ms);
  rig.run();
  t.recv = rig.start_recv(id, {desc{addr_of(dst.data()), dst.size(), 0}}, addr_of(dst.data()),
                          dst.size(), recv_deadline_ms);
  rig.run();  // admitted, our address read from the engine, fetch routed by the sender, puts posted
  REQUIRE(rig.engine->pending_count() == 1);
  t.op = rig.engine->last_put().op;
  CHECK(t.send.handle->status() == transfer_status::in_flight);
  CHECK(t.recv.handle->status() == transfer_status::in_flight);
  return t;
}

// One transfer completes through the engine's current worker, then the engine replaces that
// worker; returns the old worker's address.
std::vector<std::uint8_t> transfer_then_replace_worker(node_rig& rig, const std::string& id,
                                                       const std::vector<unsigned char>& src,
                                                       const std::vector<unsigned char>& dst) {
  auto old_address = rig.engine->worker_address();
  auto t = start_transfer(rig, id, src, dst);
  rig.engine->complete(t.op);
  rig.run();
  rig.engine->replace_worker("wedged (test)");
  return old_address;
}

// The engine heard of both sides' ends exactly once: one completed and one released event each.
void check_events_once_each(node_rig& rig) {
  auto evs = rig.events();
  CHECK(events_of_kind(evs, event_kind::completed) == 2);
  CHECK(events_of_kind(evs, event_kind::released) == 2);
}

// Both sides of `t` reached `status`, each exactly once, and both were released.
void check_both_ended(const transfer_in_flight& t, transfer_status status) {
  REQUIRE(t.send.handle->result());
  REQUIRE(t.recv.handle->result());
  CHECK(t.send.handle->result()->status == status);
  CHECK(t.recv.handle->result()->status == status);
  CHECK(t.send.handle->released());
  CHECK(t.recv.handle->released());
}

}  // namespace

TEST_CASE("a transfer between a recv-request and a send-request succeeds once the engine completes its puts, and both sides are released") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x11), dst(4096, 0);
  auto t = start_transfer(rig, "whole", src, dst);
  auto posted = rig.engine->last_put();
  CHECK(posted.bytes == 4096);
  REQUIRE(posted.batch.ops.size() == 1);
  CHECK(posted.batch.ops[0].src == addr_of(src.data()));
  CHECK(posted.batch.ops[0].dst.addr == addr_of(dst.data()));
  // The fetch carried the worker address the receive read from the engine.
  REQUIRE(rig.engine->connects().size() == 1);
  CHECK(rig.engine->connects()[0].worker_address == rig.engine->worker_address());
  rig.engine->complete(t.op);
  rig.run();
  check_both_ended(t, transfer_status::succeeded);
  CHECK(t.recv.handle->result()->bytes == 4096);
  CHECK(rig.snapshot().succeeded == 2);
  CHECK(rig.snapshot().in_flight == 0);
}

TEST_CASE("an announce serves a parked fetch only once the book holds its id: from anyone else it changes nothing") {
  // A peer can send the sender an announce too: it only makes the sender look at the book.
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x21);
  auto fetcher = rig.request<transfer_done>(rig.sender, sample_fetch("claimed", rig.decode_node.actor));
  rig.run();
  REQUIRE(rig.snapshot().parked_fetches == 1);
  rig.send(rig.sender, announce_atom::value, std::string{"claimed"});
  rig.send(rig.sender, announce_atom::value, std::string{});
  rig.run();
  CHECK(rig.snapshot().parked_fetches == 1);
  CHECK_FALSE(fetcher->answered());
  CHECK(rig.engine->puts().empty());
  auto s = rig.offer("claimed", {block_of(src)}, 0);
  rig.run();  // the announce: the parked fetch fits, an owner actor takes the offer, puts posted
  CHECK(rig.snapshot().parked_fetches == 0);
  CHECK(rig.book->size() == 0);
  CHECK(rig.owner_of("claimed"));
  REQUIRE(rig.engine->pending_count() == 1);
  rig.engine->complete(rig.engine->last_put().op);
  rig.run();
  REQUIRE(fetcher->ok());
  CHECK(fetcher->value().bytes == 4096);
  CHECK(s.handle->result()->status == transfer_status::succeeded);
  CHECK(s.handle->released());
}

TEST_CASE("a fetch bounced by a send-request that quit with it in its mailbox fails the receive, released: nothing was posted") {
  // The fetch waits parked at the sender; the send's owner starts, and is cancelled before the
  // sender hands it the fetch: CAF bounces the fetch (request_receiver_down). (The sender's own
  // hand-over has the same race: node::cancel may reach the actor it spawned before the fetch.)
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x31), dst(4096, 0);
  auto r = rig.start_recv("bounced", {desc{addr_of(dst.data()), dst.size(), 0}},
                          addr_of(dst.data()), dst.size(), 0);
  rig.run();
  REQUIRE(rig.snapshot().parked_fetches == 1);
  auto s = rig.start_send("bounced", {block_of(src)}, 0);  // in the registry
  REQUIRE(rig.dispatch_to(s.actor));  // starts
  rig.send(s.actor, cancel_atom::value);
  rig.send(rig.sender, announce_atom::value, std::string{"bounced"});
  REQUIRE(rig.dispatch_to(rig.sender));  // the announce: the parked fetch goes to the owner
  rig.run();  // the owner takes the cancel first, quits; the fetch behind it is bounced
  REQUIRE(s.handle->result());
  CHECK(s.handle->result()->status == transfer_status::cancelled);
  REQUIRE(r.handle->result());
  CHECK(r.handle->result()->status == transfer_status::failed);
  CHECK(r.handle->result()->code == errc::peer_failed);
  CHECK(r.handle->released());  // not quarantined: the prefill posted nothing
  CHECK(rig.engine->puts().empty());
}

TEST_CASE("parked fetches share one expiry timer: parking and cancelling in a loop leaves no timer per fetch, and a fetch still expires on time") {
  node_rig rig;
  auto baseline = rig.pending_timeouts();
  // A peer parks fetches nobody offers and cancels each at once: before, each left a timer
  // behind until its deadline (here 20 s), so a loop piled them up.
  for (int i = 0; i < 50; ++i) {
    auto f = sample_fetch("churn-" + std::to_string(i), rig.decode_node.actor);
    f.deadline_ms = 20000;
    auto epoch = f.epoch;
    auto answer = rig.request<transfer_done>(rig.sender, std::move(f));
    rig.run();
    rig.send(rig.sender, cancel_fetch_atom::value, "churn-" + std::to_string(i), epoch, false);
    rig.run();
    REQUIRE(answer->answered());
    CHECK(answer->code() == errc::cancelled);
  }
  CHECK(rig.snapshot().parked_fetches == 0);
  CHECK(rig.pending_timeouts() <= baseline + 1);  // the sweep's, at most
  // One that stays expires at its deadline (1 s), not before, and within one sweep period.
  auto f = sample_fetch("waits", rig.decode_node.actor);
  f.deadline_ms = 1000;
  auto answer = rig.request<transfer_done>(rig.sender, std::move(f));
  rig.run();
  CHECK(rig.snapshot().parked_fetches == 1);
  rig.advance_and_run(999ms);
  CHECK_FALSE(answer->answered());
  rig.advance_and_run(101ms);
  REQUIRE(answer->answered());
  CHECK(answer->code() == errc::timed_out);
  CHECK(rig.snapshot().parked_fetches == 0);
  // A peer's park_expired message expires nothing early.
  auto g = sample_fetch("early", rig.decode_node.actor);
  g.deadline_ms = 1000;
  auto early = rig.request<transfer_done>(rig.sender, std::move(g));
  rig.run();
  rig.send(rig.sender, park_expired_atom::value, std::string{"early"}, peer_epoch);
  rig.run();
  CHECK_FALSE(early->answered());
  CHECK(rig.snapshot().parked_fetches == 1);
}

TEST_CASE("a fetch relayed to a send-request that is killed mid-puts is answered at its DOWN: CAF's error, so the fetcher quarantines") {
  // The sender relays fetches (a peer never learns the owner's address), so it answers for an
  // owner that ends without answering: the puts it posted may still land.
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x41);
  auto s = rig.start_send("killed", {block_of(src)}, 0);
  rig.run();
  auto fetcher = rig.request<transfer_done>(rig.sender, sample_fetch("killed", rig.decode_node.actor));
  rig.run();
  REQUIRE(rig.engine->pending_count() == 1);  // the owner took it: its puts are out
  CHECK_FALSE(fetcher->answered());
  caf::anon_send_exit(s.actor, caf::exit_reason::kill);
  rig.run();
  REQUIRE(fetcher->answered());
  CHECK(fetcher->error() == caf::sec::runtime_error);  // not one of kvferry's: proves nothing
  CHECK_FALSE(s.handle->released());                    // quarantined on this side too
}

TEST_CASE("F9 (virtual time): a send whose transport dies mid-puts fails at once, ignores a cancel and its deadline, and is released exactly once, when the engine completes the orphaned puts") {
  node_rig rig;
  auto violations_before = detail::handle_state::violations();
  std::vector<unsigned char> src(4096, 0x29), dst(4096, 0);
  auto t = start_transfer(rig, "orphaned", src, dst, 1000);
  caf::anon_send_exit(rig.transport, caf::exit_reason::kill);
  rig.run();
  // Failed at once, both sides; the receive closes its window and is released (F20), the send
  // waits for the proof.
  REQUIRE(t.send.handle->result());
  CHECK(t.send.handle->result()->code == errc::backend_unhealthy);
  REQUIRE(t.recv.handle->result());
  CHECK(t.recv.handle->result()->status == transfer_status::failed);
  CHECK(t.recv.handle->released());
  CHECK_FALSE(t.send.handle->released());
  CHECK(rig.ledger->in_flight(t.send.actor.id()));
  // Nothing but the proof ends it: a cancel finds it over, its deadline passes unnoticed.
  auto c = rig.cancel(t.send);
  rig.run();
  REQUIRE(c->ok());
  CHECK(c->value() == cancel_result::already_complete);
  rig.advance_and_run(5s);
  CHECK_FALSE(t.send.handle->released());
  CHECK(rig.snapshot().unreleased == 1);
  // The engine completes the puts the dead transport posted: the ledger releases the send.
  REQUIRE(rig.engine->complete(t.op));
  rig.run();
  CHECK(t.send.handle->released());
  CHECK(t.send.handle->result()->code == errc::backend_unhealthy);  // the terminal result stands
  CHECK_FALSE(rig.ledger->in_flight(t.send.actor.id()));
  check_events_once_each(rig);
  CHECK(detail::handle_state::violations() == violations_before);
  CHECK(rig.snapshot().unreleased == 0);
}

TEST_CASE("F2 (virtual time): a send cancelled after the peer's fetch arrived resolves both handles once, and each side is released only by the engine's answer") {
  node_rig rig;
  auto violations_before = detail::handle_state::violations();
  std::vector<unsigned char> src(4096, 0x22), dst(4096, 0);
  auto t = start_transfer(rig, "cancel-after-ready", src, dst);
  auto c = rig.cancel(t.send);
  rig.run();
  REQUIRE(c->ok());
  CHECK(c->value() == cancel_result::cancel_requested_in_flight);
  CHECK(rig.engine->cancel_requested(t.op));
  // Asking to stop proves nothing: neither side is terminal or released before the engine says.
  CHECK_FALSE(t.send.handle->result());
  CHECK_FALSE(t.recv.handle->result());
  rig.advance_and_run(10s);  // long, but within both 30 s deadlines
  CHECK_FALSE(t.send.handle->released());
  CHECK_FALSE(t.recv.handle->released());
  // A second cancel while stopping answers the same, and asks nothing new of the engine.
  auto again = rig.cancel(t.send);
  rig.run();
  REQUIRE(again->ok());
  CHECK(again->value() == cancel_result::cancel_requested_in_flight);
  CHECK(rig.engine->cancel_calls().size() == 1);

  rig.engine->complete(t.op, errc::cancelled, "cancelled on request");
  rig.run();
  check_both_ended(t, transfer_status::cancelled);
  check_events_once_each(rig);
  CHECK(detail::handle_state::violations() == violations_before);
  CHECK(rig.snapshot().unreleased == 0);
}

TEST_CASE("F2 (virtual time): a cancel that arrives after the last put completed but before the transport's answer reached the request finds the transfer done: it succeeds, once") {
  node_rig rig;
  auto violations_before = detail::handle_state::violations();
  std::vector<unsigned char> src(4096, 0x23), dst(4096, 0);
  auto t = start_transfer(rig, "cancel-at-the-finish", src, dst);
  REQUIRE(rig.engine->complete(t.op));  // the engine's completion is queued at the transport
  rig.send(t.send.actor, cancel_atom::value);  // and the engine's cancel at the request
  CHECK(rig.queued(rig.transport));
  REQUIRE(rig.dispatch_to(t.send.actor));  // the cancel first: the request asks the transport
  CHECK_FALSE(t.send.handle->result());    // to stop, and waits for its answer
  rig.run();
  // The transport answered the puts before it saw the cancel: nothing was left to cancel.
  CHECK(rig.engine->cancel_calls().empty());
  check_both_ended(t, transfer_status::succeeded);
  CHECK(detail::handle_state::violations() == violations_before);
}

TEST_CASE("F3 (virtual time): a receive cancelled while queued resolves its handle once, released, and its fetch is never sent") {
  node_rig rig{1};  // one fetch in flight at a time
  std::vector<unsigned char> dst(2 * 4096, 0), src(4096, 0x33);
  auto first = rig.start_recv("admitted", {desc{addr_of(dst.data()), 4096, 0}},
                              addr_of(dst.data()), dst.size(), 30000);
  auto queued = rig.start_recv("queued", {desc{addr_of(dst.data()) + 4096, 4096, 0}},
                               addr_of(dst.data()), dst.size(), 30000);
  rig.run();
  CHECK(first.handle->status() == transfer_status::in_flight);  // its fetch is parked at the sender
  CHECK(queued.handle->status() == transfer_status::pending);
  auto c = rig.cancel(queued);
  rig.run();
  REQUIRE(c->ok());
  CHECK(c->value() == cancel_result::cancelled_before_advertise);
  REQUIRE(queued.handle->result());
  CHECK(queued.handle->result()->status == transfer_status::cancelled);
  CHECK(queued.handle->released());
  // No fetch for it reached the prefill side: a send offered now waits for a peer.
  auto late = rig.start_send("queued", {block_of(src)}, 30000);
  rig.run();
  CHECK(late.handle->status() == transfer_status::pending);
  CHECK(rig.engine->pending_count() == 0);
  // The place it queued for goes to nobody else: the admitted receive still runs.
  CHECK(first.handle->status() == transfer_status::in_flight);
  auto evs = rig.events();
  CHECK(events_of_kind(evs, event_kind::completed) == 1);
  CHECK(events_of_kind(evs, event_kind::released) == 1);
}

TEST_CASE("F8 (virtual time): after a receive is cancelled in flight, neither side's memory is released until the engine's late completion comes") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x88), dst(4096, 0);
  auto t = start_transfer(rig, "late-completion", src, dst);
  auto c = rig.cancel(t.recv);
  rig.run();
  REQUIRE(c->ok());
  CHECK(c->value() == cancel_result::cancel_requested_in_flight);
  // The receiver told the sender, the sender its request, the request the transport.
  CHECK(rig.engine->cancel_requested(t.op));
  CHECK(rig.engine->disconnects().empty());  // an ordinary cancel leaves the endpoint alone
  for (caf::timespan step : {caf::timespan{1ms}, caf::timespan{1s}, caf::timespan{20s}}) {
    rig.advance_and_run(step);
    CHECK_FALSE(t.send.handle->released());
    CHECK_FALSE(t.recv.handle->released());
  }
  rig.engine->complete(t.op, errc::cancelled);
  rig.run();
  check_both_ended(t, transfer_status::cancelled);
  CHECK(rig.snapshot().unreleased == 0);
}

TEST_CASE("F11 (virtual time): a receive whose deadline passes while fetching fails at once, tells the sender to stop, and is released only by the sender's answer") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x44), dst(4096, 0);
  auto t = start_transfer(rig, "recv-deadline", src, dst, 30000, 100);
  rig.advance_and_run(100ms);
  REQUIRE(t.recv.handle->result());
  CHECK(t.recv.handle->result()->code == errc::timed_out);
  CHECK_FALSE(t.recv.handle->released());
  CHECK(rig.engine->cancel_requested(t.op));  // cancel_fetch reached the send side
  CHECK_FALSE(t.send.handle->result());       // which waits for the engine before it ends
  rig.engine->complete(t.op, errc::cancelled);
  rig.run();
  CHECK(t.recv.handle->released());
  CHECK(t.recv.handle->result()->code == errc::timed_out);  // the first terminal result stands
  REQUIRE(t.send.handle->result());
  CHECK(t.send.handle->result()->status == transfer_status::cancelled);
  CHECK(t.send.handle->released());
  check_events_once_each(rig);
}

TEST_CASE("F4 (virtual time): a deadline that fires in the same instant as the fetch arrives: whichever the request handles first decides, and nothing is released twice") {
  node_rig rig;
  auto violations_before = detail::handle_state::violations();
  std::vector<unsigned char> src(4096, 0x55);
  auto s = rig.start_send("same-instant", {block_of(src)}, 100);
  rig.run();
  rig.advance_and_run(99ms);

  SUBCASE("the deadline first: timed out with nothing exposed, released at once; the fetch finds no one") {
    CHECK(rig.advance_time(1ms) == 1);  // the deadline is queued at the request
    auto fetcher = rig.request<transfer_done>(s.actor, sample_fetch("same-instant",
                                                                    rig.decode_node.actor),
                                              caf::actor_cast<caf::actor_addr>(rig.decode_node.actor));
    rig.run();
    REQUIRE(s.handle->result());
    CHECK(s.handle->result()->code == errc::timed_out);
    CHECK(s.handle->released());
    CHECK(rig.engine->pending_count() == 0);  // no put was ever posted
    REQUIRE(fetcher->answered());
    CHECK_FALSE(fetcher->ok());
  }
  SUBCASE("the fetch first: the puts are posted, then the deadline fails the request in flight") {
    auto fetcher = rig.request<transfer_done>(s.actor, sample_fetch("same-instant",
                                                                    rig.decode_node.actor),
                                              caf::actor_cast<caf::actor_addr>(rig.decode_node.actor));
    while (!rig.queued(s.actor))  // the probe sends the fetch
      REQUIRE(rig.dispatch_one());
    CHECK(rig.advance_time(1ms) == 1);  // the deadline queues behind the fetch
    rig.run();
    REQUIRE(rig.engine->pending_count() == 1);
    REQUIRE(s.handle->result());
    CHECK(s.handle->result()->code == errc::timed_out);
    CHECK_FALSE(s.handle->released());
    CHECK(rig.engine->cancel_requested(rig.engine->last_put().op));
    rig.engine->complete(rig.engine->last_put().op, errc::cancelled);
    rig.run();
    CHECK(s.handle->released());
    CHECK(fetcher->code() == errc::timed_out);
  }
  auto evs = rig.events();
  CHECK(events_of_kind(evs, event_kind::completed) == 1);
  CHECK(events_of_kind(evs, event_kind::released) == 1);
  CHECK(detail::handle_state::violations() == violations_before);
}

TEST_CASE("a staged send gathers each chunk through the transport's copy engine, puts it from the staging slot, and gives the slot back") {
  node_rig rig{4, 1, 4096};  // one staging slot of 4 KiB: two chunks for 8 KiB
  std::vector<unsigned char> src(8192), dst(8192, 0);
  for (std::size_t i = 0; i < src.size(); ++i)
    src[i] = static_cast<unsigned char>(i * 7);
  auto s = rig.start_send("staged", {block_of(src)}, 30000, true);
  rig.run();
  auto r = rig.start_recv("staged", {desc{addr_of(dst.data()), dst.size(), 0}},
                          addr_of(dst.data()), dst.size(), 30000);
  rig.run();
  const auto slot = rig.staging->buffers[0];
  for (int chunk = 0; chunk < 2; ++chunk) {
    // The chunk is being gathered: no put before its copy finished.
    REQUIRE(rig.copier->pending() == 1);
    CHECK(rig.engine->pending_count() == 0);
    auto copy = rig.copier->copies().back();
    REQUIRE(copy.segments.size() == 1);
    CHECK(copy.segments[0].src == addr_of(src.data()) + chunk * 4096);
    CHECK(copy.segments[0].dst.addr == slot.addr);
    REQUIRE(rig.copier->complete(copy.ticket));
    rig.run();
    REQUIRE(rig.engine->pending_count() == 1);
    auto put = rig.engine->last_put();
    REQUIRE(put.batch.ops.size() == 1);
    CHECK(put.batch.ops[0].src == slot.addr);  // put from the staging slot
    CHECK(put.batch.ops[0].dst.addr == addr_of(dst.data()) + chunk * 4096);
    // The slot holds the chunk's bytes, gathered from the source.
    CHECK(std::memcmp(ptr_of(slot.addr), src.data() + chunk * 4096, 4096) == 0);
    rig.engine->complete(put.op);
    rig.run();
  }
  REQUIRE(s.handle->result());
  CHECK(s.handle->result()->status == transfer_status::succeeded);
  CHECK(s.handle->result()->bytes == 8192);
  CHECK(s.handle->released());
  REQUIRE(r.handle->result());
  CHECK(r.handle->result()->status == transfer_status::succeeded);
  auto stats = rig.request<pool_stats>(rig.pool, stats_atom::value);
  rig.run();
  REQUIRE(stats->ok());
  CHECK(stats->value().leased == 0);
  CHECK(stats->value().poisoned == 0);
}

TEST_CASE("a holder that dies with its copy still waiting in the transport's mailbox keeps its slot out of service until that copy completes") {
  node_rig rig{4, 1, 4096};
  auto holder = rig.spawn_recorder();
  caf::send_as(holder.actor, rig.pool, acquire_atom::value, std::uint32_t{1000});
  rig.run();
  auto stats = [&rig] {
    auto s = rig.request<pool_stats>(rig.pool, stats_atom::value);
    rig.run();
    REQUIRE(s->ok());
    return s->value();
  };
  REQUIRE(stats().leased == 1);
  // Its copy into the slot reaches the transport's mailbox; then it dies, and the pool hears of
  // the death before the transport handled the copy (nothing is in the ledger yet).
  std::vector<unsigned char> src(4096, 0x77);
  std::vector<copy_op> copies{copy_op{addr_of(src.data()), rig.staging->buffers[0]}};
  caf::send_as(holder.actor, rig.transport, copy_atom::value, holder.actor.id(), copies);
  caf::anon_send_exit(holder.actor, caf::exit_reason::kill);
  REQUIRE(rig.dispatch_to(holder.actor));
  REQUIRE(rig.dispatch_to(rig.pool));  // the DOWN
  CHECK(!rig.ledger->in_flight(holder.actor.id()));
  rig.run();
  REQUIRE(rig.copier->pending() == 1);  // the copy writes into the slot now
  CHECK(stats().leased == 1);           // so it is not handed out
  rig.copier->complete_all();
  rig.run();
  auto after = stats();
  CHECK(after.leased == 0);
  CHECK(after.poisoned == 0);
}

TEST_CASE("a send that dies with its copy still in the transport's mailbox is released at once, and that copy is refused, never started") {
  node_rig rig{4, 1, 4096};
  std::vector<unsigned char> src(8192, 0x5a), dst(8192, 0);
  auto s = rig.start_send("dies", {block_of(src)}, 30000, true);
  rig.run();
  auto r = rig.start_recv("dies", {desc{addr_of(dst.data()), dst.size(), 0}},
                          addr_of(dst.data()), dst.size(), 30000);
  // Everything runs until the pool leases the slot to the send; then everything but the
  // transport: the send asked for its first copy, which waits in the transport's mailbox.
  while (!rig.staging->holders.at(0))
    REQUIRE(rig.dispatch_one());
  REQUIRE(rig.staging->holders[0] == s.actor.address());
  rig.run_except(rig.transport);
  REQUIRE(rig.queued(rig.transport));
  REQUIRE(rig.copier->pending() == 0);
  rig.kill(s.actor);
  REQUIRE(rig.dispatch_to(s.actor));
  // Nothing of it is in flight and nothing can start: its source blocks are released now.
  REQUIRE(s.handle->result());
  CHECK(s.handle->result()->code == errc::internal_error);
  CHECK(s.handle->released());
  rig.run();
  CHECK(rig.copier->pending() == 0);  // the queued copy was refused: it never read the source
  auto stats = rig.request<pool_stats>(rig.pool, stats_atom::value);
  rig.run();
  REQUIRE(stats->ok());
  CHECK(stats->value().leased == 0);  // the slot came back through the ledger
  CHECK(stats->value().poisoned == 0);
  CHECK(rig.snapshot().unreleased == 0);
}

TEST_CASE("F6 (virtual time): a staged send cancelled while its chunk is being copied ends when the copy ends, and its slot returns to the pool") {
  node_rig rig{4, 1, 4096};
  std::vector<unsigned char> src(8192, 0x66), dst(8192, 0);
  auto s = rig.start_send("staged-cancel", {block_of(src)}, 30000, true);
  rig.run();
  auto r = rig.start_recv("staged-cancel", {desc{addr_of(dst.data()), dst.size(), 0}},
                          addr_of(dst.data()), dst.size(), 30000);
  rig.run();
  REQUIRE(rig.copier->pending() == 1);
  auto c = rig.cancel(s);
  rig.run();
  REQUIRE(c->ok());
  CHECK(c->value() == cancel_result::cancel_requested_in_flight);
  CHECK_FALSE(s.handle->result());  // the copy still writes into the slot
  auto held = rig.request<pool_stats>(rig.pool, stats_atom::value);
  rig.run();
  CHECK(held->value().leased == 1);
  rig.copier->complete_all();
  rig.run();
  REQUIRE(s.handle->result());
  CHECK(s.handle->result()->status == transfer_status::cancelled);
  CHECK(s.handle->released());
  CHECK(rig.engine->pending_count() == 0);  // nothing of the cancelled chunk was put
  REQUIRE(r.handle->result());
  CHECK(r.handle->result()->status == transfer_status::cancelled);
  auto stats = rig.request<pool_stats>(rig.pool, stats_atom::value);
  rig.run();
  CHECK(stats->value().leased == 0);
  CHECK(stats->value().poisoned == 0);
}

// A staged send of four 4 KiB chunks through two 4 KiB slots, fetched, up to the point where
// chunk 0's copy is pending.
struct pipelined_send {
  std::vector<unsigned char> src = std::vector<unsigned char>(4 * 4096);
  std::vector<unsigned char> dst = std::vector<unsigned char>(4 * 4096, 0);
  node_rig::started send, recv;
  explicit pipelined_send(node_rig& rig, const std::string& id) {
    for (std::size_t i = 0; i < src.size(); ++i)
      src[i] = static_cast<unsigned char>(i * 13 + 5);
    send = rig.start_send(id, {block_of(src)}, 30000, true);
    rig.run();
    recv = rig.start_recv(id, {desc{addr_of(dst.data()), dst.size(), 0}}, addr_of(dst.data()),
                          dst.size(), 30000);
    rig.run();
  }
  // Chunk 0 gathered: its puts are posted and chunk 1's copy is pending beside them. Returns
  // chunk 0's put.
  std::uint64_t gather_first(node_rig& rig) {
    REQUIRE(rig.copier->pending() == 1);
    REQUIRE(rig.copier->complete(rig.copier->copies().back().ticket));
    rig.run();
    REQUIRE(rig.engine->pending_count() == 1);
    REQUIRE(rig.copier->pending() == 1);
    return rig.engine->last_put().op;
  }
};

pool_stats pool_stats_of(node_rig& rig) {
  auto s = rig.request<pool_stats>(rig.pool, stats_atom::value);
  rig.run();
  REQUIRE(s->ok());
  return s->value();
}

TEST_CASE("a staged send with two slots gathers chunk n+1 while chunk n is put, puts in chunk order, and gives each slot back after its put") {
  node_rig rig{4, 2, 4096};
  pipelined_send t{rig, "pipelined"};
  t.gather_first(rig);
  for (int chunk = 0; chunk < 4; ++chunk) {
    REQUIRE(rig.engine->pending_count() == 1);  // one batch of puts at a time
    auto put = rig.engine->last_put();
    REQUIRE(put.batch.ops.size() == 1);
    CHECK(put.batch.ops[0].dst.addr == addr_of(t.dst.data()) + chunk * 4096);
    CHECK(std::memcmp(ptr_of(put.batch.ops[0].src), t.src.data() + chunk * 4096, 4096) == 0);
    if (chunk < 3) {
      // The next chunk is gathered while this one is put, into the other slot.
      REQUIRE(rig.copier->pending() == 1);
      auto copy = rig.copier->copies().back();
      REQUIRE(copy.segments.size() == 1);
      CHECK(copy.segments[0].src == addr_of(t.src.data()) + (chunk + 1) * 4096);
      CHECK(copy.segments[0].dst.addr != put.batch.ops[0].src);
      CHECK(pool_stats_of(rig).leased == 2);
      REQUIRE(rig.copier->complete(copy.ticket));
      rig.run();
      // Gathered, it waits for the puts before it: nothing of it is put yet.
      CHECK(rig.engine->pending_count() == 1);
      CHECK(rig.engine->last_put().op == put.op);
    } else {
      CHECK(rig.copier->pending() == 0);
      CHECK(pool_stats_of(rig).leased == 1);  // the last chunk's slot only
    }
    rig.engine->complete(put.op);
    rig.run();
  }
  REQUIRE(t.send.handle->result());
  CHECK(t.send.handle->result()->status == transfer_status::succeeded);
  CHECK(t.send.handle->result()->bytes == t.src.size());
  CHECK(t.send.handle->released());
  REQUIRE(t.recv.handle->result());
  CHECK(t.recv.handle->result()->status == transfer_status::succeeded);
  auto stats = pool_stats_of(rig);
  CHECK(stats.leased == 0);
  CHECK(stats.poisoned == 0);
  CHECK(rig.copier->copies().size() == 4);
}

TEST_CASE("F6 (virtual time): a staged send cancelled while chunk n is put and chunk n+1 gathered ends only when both answered, and both slots return to the pool") {
  node_rig rig{4, 2, 4096};
  pipelined_send t{rig, "pipelined-cancel"};
  const auto put = t.gather_first(rig);
  auto c = rig.cancel(t.send);
  rig.run();
  REQUIRE(c->ok());
  CHECK(c->value() == cancel_result::cancel_requested_in_flight);
  CHECK(rig.engine->cancel_requested(put));
  CHECK_FALSE(t.send.handle->result());
  rig.engine->complete(put, errc::cancelled);
  rig.run();
  // The put answered; the copy still writes into the other slot, so neither is given back yet.
  CHECK_FALSE(t.send.handle->result());
  CHECK_FALSE(t.send.handle->released());
  CHECK(pool_stats_of(rig).leased == 2);
  rig.copier->complete_all();
  rig.run();
  REQUIRE(t.send.handle->result());
  CHECK(t.send.handle->result()->status == transfer_status::cancelled);
  CHECK(t.send.handle->released());
  CHECK(rig.engine->puts().size() == 1);  // the gathered chunk was never put
  auto stats = pool_stats_of(rig);
  CHECK(stats.leased == 0);
  CHECK(stats.poisoned == 0);
  REQUIRE(t.recv.handle->result());
  CHECK(t.recv.handle->result()->status != transfer_status::succeeded);
}

TEST_CASE("a staged send whose put fails while the next chunk is gathered fails with the put's error once that copy ended") {
  node_rig rig{4, 2, 4096};
  pipelined_send t{rig, "pipelined-put-fails"};
  REQUIRE(rig.engine->fail(t.gather_first(rig), errc::transport_error, "endpoint reset"));
  rig.run();
  CHECK_FALSE(t.send.handle->result());  // the copy into the other slot still runs
  rig.copier->complete_all();
  rig.run();
  REQUIRE(t.send.handle->result());
  CHECK(t.send.handle->result()->code == errc::transport_error);
  CHECK(t.send.handle->result()->message.find("endpoint reset") != std::string::npos);
  CHECK(t.send.handle->released());
  CHECK(rig.engine->puts().size() == 1);
  auto stats = pool_stats_of(rig);
  CHECK(stats.leased == 0);
  CHECK(stats.poisoned == 0);
}

TEST_CASE("after the engine replaced its worker, the next fetch carries the new worker address (read from the engine per fetch) and health counts the replacement") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x77), dst(4096, 0);
  auto before = transfer_then_replace_worker(rig, "before-replacement", src, dst);
  // The engine reports each peer, as the node's callback does.
  rig.send(rig.transport, peer_down_atom::value, peer_epoch,
           caf::make_error(errc::peer_failed, "worker replaced"));
  rig.run();
  CHECK(rig.snapshot().worker_replacements == 1);
  auto after = rig.engine->worker_address();
  REQUIRE(after != before);
  auto second = start_transfer(rig, "after-replacement", src, dst);
  // The peer's endpoint was forgotten, so the send side connects again, to the new address.
  REQUIRE(rig.engine->connects().size() == 2);
  CHECK(rig.engine->connects()[0].worker_address == before);
  CHECK(rig.engine->connects()[1].worker_address == after);
  rig.engine->complete(second.op);
  rig.run();
  REQUIRE(second.recv.handle->result());
  CHECK(second.recv.handle->result()->status == transfer_status::succeeded);
}


TEST_CASE("F20 (virtual time): a worker replacement while a receive is fetching fails it at once, tells the sender to stop, and releases it") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x66), dst(4096, 0);
  auto t = start_transfer(rig, "lost-window", src, dst);
  REQUIRE(rig.engine->windows()->open_count() == 1);
  // What the engine does when it replaces a wedged worker: the sender writes to the old one.
  CHECK(rig.engine->windows()->lose_all() == 1);
  rig.run();
  REQUIRE(t.recv.handle->result());
  CHECK(t.recv.handle->result()->code == errc::transport_error);
  CHECK(t.recv.handle->released());  // the lost window proves nothing writes there any more
  CHECK(rig.engine->cancel_requested(t.op));  // cancel_fetch reached the send side
  // It said why: the send side closes its endpoint to the replaced worker, whose
  // acknowledgements would never come (the real engine then fails the put and force-closes).
  CHECK(rig.engine->disconnects() == std::vector<std::uint64_t>{peer_epoch});
  CHECK_FALSE(t.send.handle->released());     // which waits for its engine's answer
  rig.engine->complete(t.op, errc::cancelled);
  rig.run();
  REQUIRE(t.send.handle->result());
  CHECK(t.send.handle->released());
  check_events_once_each(rig);
}

TEST_CASE("a stale-worker notice closes the endpoint only while it still leads to that worker") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x68), dst(4096, 0);
  // The peer replaced its worker, and a later fetch already connected to the new one.
  auto old_address = transfer_then_replace_worker(rig, "to-old-worker", src, dst);
  auto second = start_transfer(rig, "to-new-worker", src, dst);
  auto new_address = rig.engine->worker_address();
  REQUIRE(rig.engine->connects().size() == 2);
  REQUIRE(rig.engine->connects()[1].worker_address == new_address);
  // A late notice about the old worker leaves the new endpoint alone.
  rig.send(rig.transport, stale_worker_atom::value, peer_epoch, old_address);
  rig.run();
  CHECK(rig.engine->disconnects().empty());
  // About the worker it leads to, it closes it.
  rig.send(rig.transport, stale_worker_atom::value, peer_epoch, new_address);
  rig.run();
  CHECK(rig.engine->disconnects() == std::vector<std::uint64_t>{peer_epoch});
  rig.engine->complete(second.op);
  rig.run();
}

TEST_CASE("F20 (virtual time): a window lost before the fetch went out is opened again, and the fetch names the new one") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x67), dst(4096, 0);
  auto s = rig.start_send("reopened", {block_of(src)}, 30000);
  rig.run();
  // The engine replaces its worker between the window's opening and the address's read: the
  // window is lost (its window_lost is on its way to the receive) and the address is the new one.
  int lost = -1;
  rig.before_address_read = [&] { lost = static_cast<int>(rig.engine->windows()->lose_all()); };
  auto r = rig.start_recv("reopened", {desc{addr_of(dst.data()), dst.size(), 0}},
                          addr_of(dst.data()), dst.size(), 30000);
  rig.run();
  CHECK(lost == 1);
  // Opened again: a new window, named by the fetch, and the transfer goes on; the first
  // window's window_lost, which came after the fetch went out, changed nothing.
  REQUIRE(rig.engine->pending_count() == 1);
  REQUIRE(rig.engine->windows()->open_count() == 1);
  const auto window = rig.engine->last_put().batch.window;
  CHECK(window != 0);
  CHECK(rig.engine->windows()->is_open(window));
  rig.engine->complete(rig.engine->last_put().op);
  rig.run();
  REQUIRE(r.handle->result());
  CHECK(r.handle->result()->status == transfer_status::succeeded);
  CHECK(r.handle->released());
  REQUIRE(s.handle->result());
  CHECK(s.handle->released());
  CHECK(rig.engine->windows()->open_count() == 0);
}

// -- the offer book: sends no peer has fetched yet, without an actor each ----------------------

TEST_CASE("an offer waits in the book without an actor, and a fitting fetch moves its owner into a new send-request, and the transfer succeeds, released once") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x41);
  auto s = rig.offer("booked", {block_of(src)}, 30000);
  rig.run();
  CHECK(rig.book->size() == 1);
  CHECK_FALSE(rig.owner_of("booked"));  // no actor while it waits
  CHECK(rig.snapshot().in_flight == 1);  // but a request all the same
  auto fetcher = rig.request<transfer_done>(rig.sender, sample_fetch("booked", rig.decode_node.actor));
  rig.run();
  CHECK(rig.book->size() == 0);
  CHECK(rig.owner_of("booked"));
  REQUIRE(rig.engine->pending_count() == 1);
  CHECK(s.handle->status() == transfer_status::in_flight);
  // A second fetch goes to the owner, which is already sending: refused as a duplicate.
  auto second = rig.request<transfer_done>(rig.sender, sample_fetch("booked", rig.decode_node.actor));
  rig.run();
  REQUIRE(second->answered());
  CHECK(second->code() == errc::duplicate_request_id);
  rig.engine->complete(rig.engine->last_put().op);
  rig.run();
  REQUIRE(fetcher->ok());
  CHECK(fetcher->value().bytes == 4096);
  REQUIRE(s.handle->result());
  CHECK(s.handle->result()->status == transfer_status::succeeded);
  CHECK(s.handle->released());
  CHECK(rig.snapshot().in_flight == 0);
  auto evs = rig.events();
  CHECK(events_of_kind(evs, event_kind::completed) == 1);
  CHECK(events_of_kind(evs, event_kind::released) == 1);
}

TEST_CASE("F4 (virtual time): an offer no peer fetches ends timed_out at its deadline through the sender's sweep, not before, released, and a later fetch parks") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x42);
  auto s = rig.offer("expires", {block_of(src)}, 250);
  rig.run();
  CHECK(rig.pending_timeouts() == 1);  // the sweep, armed by the announce
  rig.advance_and_run(249ms);
  CHECK(s.handle->status() == transfer_status::pending);
  CHECK(rig.book->size() == 1);
  rig.advance_and_run(1ms);
  REQUIRE(s.handle->result());
  CHECK(s.handle->result()->code == errc::timed_out);
  CHECK(s.handle->result()->message.find("no peer fetched it") != std::string::npos);
  CHECK(s.handle->released());
  CHECK(rig.book->size() == 0);
  CHECK(rig.pending_timeouts() == 0);  // nothing left to sweep: the timer is not re-armed
  auto late = rig.request<transfer_done>(rig.sender, sample_fetch("expires", rig.decode_node.actor));
  rig.run();
  CHECK_FALSE(late->answered());
  CHECK(rig.snapshot().parked_fetches == 1);
  CHECK(rig.engine->puts().empty());
}

TEST_CASE("a fetch that does not fit an offer in the book is refused and the offer waits on, and a fitting one is then served") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x43);
  auto s = rig.offer("fits-later", {block_of(src)}, 0);
  rig.run();
  auto wrong = sample_fetch("fits-later", rig.decode_node.actor);
  wrong.blocks = {{0x500000, 2048, 0}};  // another size than offered
  auto refused = rig.request<transfer_done>(rig.sender, std::move(wrong));
  rig.run();
  REQUIRE(refused->answered());
  CHECK(refused->code() == errc::size_mismatch);
  CHECK(rig.book->size() == 1);
  CHECK_FALSE(rig.owner_of("fits-later"));
  CHECK(s.handle->status() == transfer_status::pending);
  auto fetcher = rig.request<transfer_done>(rig.sender, sample_fetch("fits-later", rig.decode_node.actor));
  rig.run();
  REQUIRE(rig.engine->pending_count() == 1);
  rig.engine->complete(rig.engine->last_put().op);
  rig.run();
  REQUIRE(fetcher->ok());
  CHECK(s.handle->result()->status == transfer_status::succeeded);
}

TEST_CASE("a bound offer ends peer_failed, released, when the node it is bound to goes away, one monitor serving every offer bound to it") {
  node_rig rig;
  std::vector<unsigned char> a(4096, 0x44), b(4096, 0x45);
  auto peer = rig.spawn_recorder();  // the bound node's entry
  auto bound = caf::actor_cast<sender_actor>(peer.actor);
  auto first = rig.offer("bound-1", {block_of(a)}, 0, bound);
  auto second = rig.offer("bound-2", {block_of(b)}, 0, bound);
  rig.run();
  CHECK(rig.book->size() == 2);
  rig.kill(peer.actor);
  rig.run();
  for (auto* s : {&first, &second}) {
    REQUIRE(s->handle->result());
    CHECK(s->handle->result()->code == errc::peer_failed);
    CHECK(s->handle->released());
  }
  CHECK(rig.book->size() == 0);
  // An offer bound to a node already gone ends as soon as the sender watches it.
  auto third = rig.offer("bound-3", {block_of(a)}, 0, bound);
  rig.run();
  REQUIRE(third.handle->result());
  CHECK(third.handle->result()->code == errc::peer_failed);
  CHECK(rig.book->size() == 0);
}

// The address of a peer actor that ended and of which no handle is left: what a fetch's anchor
// names once the peer's node disconnected while the fetch waited in the sender's mailbox (CAF
// drops the proxy).
caf::actor_addr vanished_peer(node_rig& rig) {
  auto peer = rig.spawn_recorder();
  auto addr = caf::actor_cast<caf::actor_addr>(peer.actor);
  rig.kill(peer.actor);
  rig.run();
  return addr;  // `peer`, the last handle, goes here
}

// The sender still serves: an offer of `id` and a live peer's fetch for it meet, the put is
// posted once and completes, and the fetch is answered with the bytes.
void check_sender_serves(node_rig& rig, const std::string& id) {
  std::vector<unsigned char> src(4096, 0x47);
  auto s = rig.offer(id, {block_of(src)}, 0);
  auto fetch = rig.request<transfer_done>(rig.sender, sample_fetch(id, rig.decode_node.actor));
  rig.run();
  REQUIRE(rig.engine->pending_count() == 1);
  rig.engine->complete(rig.engine->last_put().op);
  rig.run();
  REQUIRE(fetch->ok());
  CHECK(fetch->value().bytes == 4096);
  CHECK(s.handle->result()->status == transfer_status::succeeded);
}

TEST_CASE("a fetch whose peer vanished before the sender read it is refused peer_failed, not parked, and the sender serves on") {
  // CAF 0.17's monitor() of such an address dereferences a null actor: before, the whole
  // prefill process died (seen as F22 crashing once in a release stress run).
  node_rig rig;
  auto gone = vanished_peer(rig);
  REQUIRE_FALSE(caf::actor_cast<caf::actor>(gone));
  auto f = sample_fetch("orphan", caf::actor{});
  f.anchor = gone;
  auto answer = rig.request<transfer_done>(rig.sender, std::move(f));
  rig.run();
  REQUIRE(answer->answered());
  CHECK(answer->code() == errc::peer_failed);
  CHECK(answer->describe().find("went away before node 'rig' read its fetch") != std::string::npos);
  CHECK(rig.snapshot().parked_fetches == 0);
  check_sender_serves(rig, "orphan");  // the same id, from a live peer
}

TEST_CASE("an offer withdrawn before the sender watched its bound node, which vanished, leaves the sender serving") {
  // The book lists a bound node for the sender to watch when the offer comes; the engine may
  // cancel the offer, and the node may vanish, before the sender looks.
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x48);
  {
    auto peer = rig.spawn_recorder();
    rig.kill(peer.actor);
    rig.run();
    auto withdrawn = rig.offer("withdrawn", {block_of(src)}, 0,
                               caf::actor_cast<sender_actor>(peer.actor));
    auto cancelled = rig.cancel(withdrawn);
    REQUIRE(cancelled->ok());
    CHECK(cancelled->value() == cancel_result::cancelled_before_advertise);
  }  // the last handle of the bound node goes here
  rig.run();  // the announce: the sender watches the nodes the book lists
  check_sender_serves(rig, "next");
}

TEST_CASE("a decline ends an offer in the book cancelled and released, without an actor, and a second decline finds nothing") {
  node_rig rig;
  std::vector<unsigned char> src(4096, 0x46);
  auto s = rig.offer("declined", {block_of(src)}, 0);
  rig.run();
  auto first = rig.request<cancel_result>(rig.sender, decline_atom::value, std::string{"declined"});
  rig.run();
  REQUIRE(first->ok());
  CHECK(first->value() == cancel_result::cancelled_before_advertise);
  REQUIRE(s.handle->result());
  CHECK(s.handle->result()->status == transfer_status::cancelled);
  CHECK(s.handle->released());
  CHECK(rig.book->size() == 0);
  auto again = rig.request<cancel_result>(rig.sender, decline_atom::value, std::string{"declined"});
  rig.run();
  REQUIRE(again->ok());
  CHECK(again->value() == cancel_result::not_found);
}

TEST_CASE("a layer marked ready while the offer waits in the book is sent as soon as the fetch comes, and the next waits for its own mark") {
  node_rig rig;
  std::vector<unsigned char> src(8192, 0x47);
  auto s = rig.offer("layered", {desc{addr_of(src.data()), 4096, 1}, desc{addr_of(src.data()) + 4096, 4096, 1}},
                     0, {}, {1, 1});
  rig.run();
  REQUIRE(s.handle->claim_layer(0) == errc::none);
  REQUIRE(rig.book->mark_ready("layered", 0));
  auto f = sample_fetch("layered", rig.decode_node.actor);
  f.blocks = {{0x500000, 4096, 0}, {0x501000, 4096, 0}};
  auto fetcher = rig.request<transfer_done>(rig.sender, std::move(f));
  rig.run();
  REQUIRE(rig.engine->pending_count() == 1);  // layer 0's puts
  CHECK(rig.engine->last_put().bytes == 4096);
  rig.engine->complete(rig.engine->last_put().op);
  rig.run();
  CHECK(rig.engine->pending_count() == 0);  // layer 1 is not ready
  CHECK_FALSE(fetcher->answered());
  CHECK_FALSE(rig.book->mark_ready("layered", 1));  // the offer left the book: its actor hears it
  auto owner = rig.owner_of("layered");
  REQUIRE(owner);
  rig.send(caf::actor_cast<send_request_actor>(owner), layer_atom::value, std::uint32_t{1});
  rig.run();
  REQUIRE(rig.engine->pending_count() == 1);
  rig.engine->complete(rig.engine->last_put().op);
  rig.run();
  REQUIRE(fetcher->ok());
  CHECK(fetcher->value().bytes == 8192);
  CHECK(s.handle->result()->status == transfer_status::succeeded);
}

TEST_CASE("a restarted sender finds its predecessor's offers in the book: it serves their fetches and sweeps their deadlines") {
  node_rig rig;
  std::vector<unsigned char> a(4096, 0x48), b(4096, 0x49);
  auto kept = rig.offer("kept", {block_of(a)}, 0);
  auto timed = rig.offer("timed", {block_of(b)}, 1000);
  rig.run();
  rig.kill(rig.sender);
  rig.run();
  rig.sender = rig.track(spawn_sender_actor(
    rig.system(), sender_spec{"rig", 60000, {}, rig.registry, {}, 65536, 4096, rig.health, rig.book}));
  rig.children->set({rig.transport, rig.pool, rig.sender, rig.receiver});
  rig.run();
  CHECK(rig.book->size() == 2);
  auto fetcher = rig.request<transfer_done>(rig.sender, sample_fetch("kept", rig.decode_node.actor));
  rig.run();
  REQUIRE(rig.engine->pending_count() == 1);
  rig.engine->complete(rig.engine->last_put().op);
  rig.run();
  REQUIRE(fetcher->ok());
  CHECK(kept.handle->result()->status == transfer_status::succeeded);
  rig.advance_and_run(999ms);
  CHECK(timed.handle->status() == transfer_status::pending);
  rig.advance_and_run(1ms);
  REQUIRE(timed.handle->result());
  CHECK(timed.handle->result()->code == errc::timed_out);
  CHECK(timed.handle->released());
  CHECK(rig.book->size() == 0);
}

}  // TEST_SUITE
