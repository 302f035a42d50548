// F17: malformed or hostile fetches sent straight to a prefill node's published sender, by a
// client with its own CAF actor system and its own UCX engine and memory (so that a put that
// should not happen would really land in memory this test can inspect).
#include "actors/messages.hpp"
#include "actors/node_impl.hpp"
#include "kvferry/node.hpp"
#include "transport/engine.hpp"
#include "transport/wire_check.hpp"

#include <caf/io/all.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <future>
#include <optional>
#include <random>
#include <thread>

using namespace kvferry;
using namespace std::chrono_literals;

namespace {

struct client_config : caf::actor_system_config {
  client_config() {
    load<caf::io::middleman>();
    add_message_types<caf::id_block::kvferry>();
  }
};

struct hostile_client {
  client_config cfg;
  caf::actor_system sys{cfg};
  std::unique_ptr<transport::engine> engine;
  std::vector<unsigned char> memory = std::vector<unsigned char>(4 * 4096, 0);
  std::shared_ptr<transport::memory_registration> reg;
  transport::window_lease window;  // over all of memory: what its fetches name
  sender_actor prefill;

  explicit hostile_client(std::uint16_t port) {
    connect(port);
  }
  void connect(std::uint16_t port) {
    transport::engine_options eo;
    eo.tls = "tcp";
    auto e = transport::engine::start(eo, nullptr);
    REQUIRE_MESSAGE(e, e.error().message);
    engine = std::move(e.value());
    reg = engine->register_memory(memory.data(), memory.size()).value();
    window = transport::window_lease(engine->windows(), {{addr_of(memory.data()), memory.size()}});
    auto remote = sys.middleman().remote_actor<sender_actor>("127.0.0.1", port);
    REQUIRE_MESSAGE(remote, sys.render(remote.error()));
    prefill = *remote;
  }

  // A fetch for `id` into memory[offset, +bytes), declaring region [region_off, +region_bytes).
  fetch_msg fetch(const std::string& id, std::uint64_t offset, std::uint64_t bytes,
                  std::uint64_t region_off, std::uint64_t region_bytes) {
    fetch_msg f;
    f.request_id = id;
    f.node_name = "hostile";
    f.epoch = 0x5157;
    f.worker_address = engine->worker_address();
    f.rkeys = {reg->packed_rkey()};
    auto base = reinterpret_cast<std::uint64_t>(memory.data());
    f.region_bases = {base + region_off};
    f.region_bytes = {region_bytes};
    f.blocks = {{base + offset, bytes, 0}};
    f.deadline_ms = 2000;
    f.window = window.token();
    return f;
  }

  // Sends `f` and returns the answer: bytes written, or the error.
  caf::expected<std::uint64_t> ask(fetch_msg f) {
    caf::scoped_actor self{sys};
    caf::expected<std::uint64_t> out{caf::sec::unexpected_message};
    self->request(prefill, 20s, std::move(f))
      .receive([&](transfer_done& d) { out = d.bytes; }, [&](caf::error& e) { out = e; });
    return out;
  }

  bool untouched() const {
    return std::all_of(memory.begin(), memory.end(), [](auto b) { return b == 0; });
  }
};

// A duration whose unit is out of range: it crosses the wire, and CAF 0.17's to_string of it
// indexes a table out of bounds (fuzz/README.md), so a node must never print one.
caf::duration unprintable_duration() {
  return caf::duration{static_cast<caf::time_unit>(0x40000000), 7};
}

std::uint64_t base_of(const hostile_client& c) {
  return reinterpret_cast<std::uint64_t>(c.memory.data());
}

errc code_of(const caf::expected<std::uint64_t>& x) {
  return x ? errc::none : static_cast<errc>(x.error().code());
}

// The fetch answered `answer` was served: `bytes` written, which the client's memory holds from
// its start (every byte `fill`), and the offer `s` succeeded.
void check_served(const caf::expected<std::uint64_t>& answer, std::uint64_t bytes,
                  const hostile_client& client, unsigned char fill, transfer_handle& s) {
  REQUIRE(answer);
  CHECK(*answer == bytes);
  CHECK(std::all_of(client.memory.begin(), client.memory.begin() + bytes,
                    [fill](auto b) { return b == fill; }));
  auto r = s.wait_for(20s);
  REQUIRE(r);
  CHECK(r->status == transfer_status::succeeded);
}

// A prefill node over tcp with one registered region of 4 pages filled with `fill`.
struct prefill_node {
  std::unique_ptr<node> owned;
  std::vector<unsigned char> src;
  region_id region = 0;

  explicit prefill_node(unsigned char fill, std::string layout_tag = {}) : src(4 * 4096, fill) {
    node_config cfg;
    cfg.transport = "tcp";
    cfg.layout_tag = std::move(layout_tag);
    auto started = node::start(cfg);
    REQUIRE_MESSAGE(started, started.error().message);
    owned = std::move(started.value());
    region = owned->register_region(src.data(), src.size()).value();
  }
};

}  // namespace

TEST_CASE("F17: hostile fetches get a clear error, nothing is written, and the node keeps serving") {
  prefill_node fixture{0xAB};
  auto& prefill = *fixture.owned;
  auto region = fixture.region;
  hostile_client client{prefill.port()};

  SUBCASE("a block outside the region the fetch itself declares") {
    auto s = prefill.send("victim", {{region, 0, 4096}});
    // Declares [0, 4096) but aims at [8192, 12288): inside the real registration, outside the
    // declared region. Refused before it reaches the offer, which waits on.
    auto answer = client.ask(client.fetch("victim", 8192, 4096, 0, 4096));
    CHECK(code_of(answer) == errc::out_of_range);
    CHECK(client.untouched());
    CHECK_FALSE(s.result());
  }
  SUBCASE("a size that differs from the sender's block") {
    auto s = prefill.send("victim", {{region, 0, 4096}});
    auto answer = client.ask(client.fetch("victim", 0, 8192, 0, 16384));
    CHECK(code_of(answer) == errc::size_mismatch);
    CHECK(client.untouched());
    CHECK_FALSE(s.result());
  }
  SUBCASE("region descriptors that do not match the rkeys") {
    auto s = prefill.send("victim", {{region, 0, 4096}});
    auto f = client.fetch("victim", 0, 4096, 0, 4096);
    f.region_bytes.push_back(1);
    CHECK(code_of(client.ask(std::move(f))) == errc::malformed_message);
    CHECK(client.untouched());
  }
  SUBCASE("an unknown request id waits no longer than its deadline") {
    auto f = client.fetch("nobody-sends-this", 0, 4096, 0, 4096);
    f.deadline_ms = 100;
    CHECK(code_of(client.ask(std::move(f))) == errc::timed_out);
    CHECK(client.untouched());
  }
  SUBCASE("a second fetch for a request whose first fetch is parked") {
    auto f1 = client.fetch("parked-twice", 0, 4096, 0, 16384);
    auto f2 = f1;
    caf::scoped_actor self{client.sys};
    self->send(client.prefill, std::move(f1));  // parks: no send() for this id yet
    CHECK(code_of(client.ask(std::move(f2))) == errc::duplicate_request_id);
    CHECK(client.untouched());
  }
  // Whatever came before, the node still serves a well-formed fetch, which really writes.
  auto ok = prefill.send("fine", {{region, 4096, 4096}});
  auto answer = client.ask(client.fetch("fine", 4096, 4096, 0, 16384));
  REQUIRE(answer);
  CHECK(*answer == 4096);
  CHECK(client.memory[4096] == 0xAB);
  CHECK(client.memory[8191] == 0xAB);
  CHECK(client.memory[0] == 0);
  CHECK(prefill.health().healthy);
  prefill.stop(1s);
}

TEST_CASE("a fetch from before its node restarted is refused, and the restart's fetch for the same id is served") {
  prefill_node fixture{0xCD};
  auto& prefill = *fixture.owned;
  auto region = fixture.region;
  hostile_client client{prefill.port()};

  // The same decode node ("hostile") before and after a restart: same name, new epoch, and the
  // restarted node asks again for the request its earlier incarnation had asked for.
  auto before = client.fetch("asked-twice", 0, 4096, 0, 16384);
  before.epoch = 0x1111;
  auto after = before;
  after.epoch = 0x2222;
  // Both park (nothing sent yet). Whichever arrives first, the earlier incarnation's fetch is
  // answered stale_epoch: superseded while parked, or refused on arrival.
  auto after_answer = std::async(std::launch::async, [&] { return client.ask(after); });
  auto before_answer = std::async(std::launch::async, [&] { return client.ask(before); });
  REQUIRE(before_answer.wait_for(20s) == std::future_status::ready);
  auto stale = before_answer.get();
  CHECK(code_of(stale) == errc::stale_epoch);
  // The newer fetch is the one waiting now: the older incarnation asking again is refused.
  CHECK(code_of(client.ask(before)) == errc::stale_epoch);
  CHECK(client.untouched());
  // The restarted node's fetch was not refused as a duplicate: the send serves it.
  auto s = prefill.send("asked-twice", {{region, 0, 4096}});
  REQUIRE(after_answer.wait_for(20s) == std::future_status::ready);
  check_served(after_answer.get(), 4096, client, 0xCD, s);
  prefill.stop(1s);
}

TEST_CASE("a fetch that declares another layout tag is refused and the offer waits for a fitting one") {
  prefill_node fixture{0xAB, "llama-3-8b/fp16/block16/tp0"};
  auto& prefill = *fixture.owned;
  hostile_client client{prefill.port()};
  auto s = prefill.send("victim", {{fixture.region, 0, 4096}});
  auto f = client.fetch("victim", 0, 4096, 0, 4096);  // declares no layout tag
  auto refused = client.ask(f);
  CHECK(code_of(refused) == errc::incompatible_peer);
  REQUIRE_FALSE(refused);
  // The answer names the request, not the node's tag.
  auto text = caf::to_string(refused.error());
  CHECK(text.find("llama") == std::string::npos);
  CHECK(client.untouched());
  CHECK_FALSE(s.result().has_value());  // the offer is still there
  f.layout_tag = "llama-3-8b/fp16/block16/tp0";
  check_served(client.ask(f), 4096, client, 0xAB, s);
}

TEST_CASE("F17: wrong guesses at an offer's shape are refused without ending the offer or revealing it") {
  prefill_node fixture{0xAB};
  auto& prefill = *fixture.owned;
  hostile_client client{prefill.port()};
  auto s = prefill.send("victim", {{fixture.region, 0, 4096}, {fixture.region, 8192, 4096}});
  // Wrong count, wrong size, ranges past the end: every answer is the same code and the same
  // text, so no answer says how many blocks there are or how large they are.
  std::vector<fetch_msg> guesses;
  guesses.push_back(client.fetch("victim", 0, 4096, 0, 16384));  // one block, two offered
  auto sizes = client.fetch("victim", 0, 2048, 0, 16384);
  sizes.blocks.push_back({base_of(client) + 4096, 2048, 0});
  guesses.push_back(sizes);
  auto past = client.fetch("victim", 0, 4096, 0, 16384);
  past.ranges = {5, 1};
  guesses.push_back(past);
  std::string first_text;
  for (auto& g : guesses) {
    auto answer = client.ask(g);
    REQUIRE_FALSE(answer);
    CHECK(code_of(answer) == errc::size_mismatch);
    auto text = caf::to_string(answer.error());
    CHECK(text.find("4096") == std::string::npos);
    CHECK(text.find(" 2 ") == std::string::npos);
    if (first_text.empty())
      first_text = text;
    CHECK(text == first_text);
  }
  CHECK(client.untouched());
  CHECK_FALSE(s.result());  // the offer is still there ...
  auto right = client.fetch("victim", 0, 4096, 0, 16384);
  right.blocks.push_back({base_of(client) + 4096, 4096, 0});
  check_served(client.ask(right), 8192, client, 0xAB, s);  // ... and the right fetch gets it
  prefill.stop(1s);
}

TEST_CASE("F17: garbage worker addresses and rkeys are refused before UCX reads them, and the node keeps serving") {
  prefill_node fixture{0xAB};
  auto& prefill = *fixture.owned;
  hostile_client client{prefill.port()};
  auto s = prefill.send("victim", {{fixture.region, 0, 4096}});
  auto good = client.fetch("victim", 0, 4096, 0, 16384);
  std::mt19937_64 rng{20261201};
  auto random_bytes = [&](std::size_t n) {
    std::vector<std::uint8_t> out(n);
    for (auto& b : out)
      b = static_cast<std::uint8_t>(rng());
    return out;
  };
  std::vector<fetch_msg> bad;
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{64}, std::size_t{300}}) {
    auto f = good;
    f.worker_address = random_bytes(n);
    bad.push_back(f);
  }
  for (std::size_t cut = 1; cut < good.worker_address.size(); cut += 5) {
    auto f = good;
    f.worker_address.resize(cut);  // every prefix of a real address
    bad.push_back(f);
  }
  auto huge = good;
  huge.worker_address.assign(1 << 20, 0xFF);
  bad.push_back(huge);
  for (std::size_t n : {std::size_t{0}, std::size_t{3}, std::size_t{40}, std::size_t{5000}}) {
    auto f = good;
    f.rkeys = {random_bytes(n)};
    bad.push_back(f);
  }
  for (std::size_t cut = 0; cut < good.rkeys[0].size(); ++cut) {
    auto f = good;
    f.rkeys[0].resize(cut);
    bad.push_back(f);
  }
  std::size_t refused = 0;
  for (auto& f : bad) {
    auto answer = client.ask(f);
    CHECK(code_of(answer) == errc::malformed_message);
    refused += answer ? 0 : 1;
  }
  CHECK(refused == bad.size());
  CHECK(client.untouched());
  CHECK_FALSE(s.result());
  check_served(client.ask(good), 4096, client, 0xAB, s);
  CHECK(prefill.health().healthy);
  prefill.stop(1s);
}

TEST_CASE("F17: ids, blocks and deadlines from the wire are bounded by the node's limits") {
  node_config cfg;
  cfg.transport = "tcp";
  cfg.max_blocks_per_request = 8;
  cfg.default_deadline_ms = 300;
  auto started = node::start(cfg);
  REQUIRE_MESSAGE(started, started.error().message);
  auto& prefill = *started.value();
  hostile_client client{prefill.port()};
  auto long_id = client.fetch(std::string(100000, 'i'), 0, 4096, 0, 16384);
  auto answer = client.ask(long_id);
  CHECK(code_of(answer) == errc::limit_exceeded);
  CHECK(caf::to_string(answer.error()).find("max_request_id_bytes") != std::string::npos);
  auto many = client.fetch("many", 0, 16, 0, 16384);
  for (int i = 1; i < 9; ++i)
    many.blocks.push_back({base_of(client) + 16u * i, 16, 0});
  answer = client.ask(many);
  CHECK(code_of(answer) == errc::limit_exceeded);
  CHECK(caf::to_string(answer.error()).find("max_blocks_per_request") != std::string::npos);
  // A fetch asking to wait 49 days waits no longer than the node's own default (300 ms). The
  // bound is generous for a loaded machine: without the cap the answer would take 49 days.
  auto patient = client.fetch("nobody-sends-this", 0, 4096, 0, 16384);
  patient.deadline_ms = 49u * 24 * 3600 * 1000;
  auto t0 = std::chrono::steady_clock::now();
  answer = client.ask(patient);
  CHECK(code_of(answer) == errc::timed_out);
  CHECK(std::chrono::steady_clock::now() - t0 < 15s);
  CHECK(prefill.health().parked_fetches == 0);
  CHECK(client.untouched());
  prefill.stop(1s);
}

// A peer that parks fetches for ids nobody sends, from its own actor system (its own node).
struct flooder {
  hostile_client client;
  caf::scoped_actor self{client.sys};  // destroyed first: then the client's system goes

  explicit flooder(std::uint16_t port) : client(port) {}

  // Sends `n` fetches without waiting, waits for `answers` answers (only refusals are answered;
  // what is parked stays unanswered) and returns how many of them were limit_exceeded. The
  // caller checks the parked count on the node, which shows that the others were parked.
  int park(const std::string& prefix, int n, int answers) {
    for (int i = 0; i < n; ++i) {
      auto f = client.fetch(prefix + std::to_string(i), 0, 4096, 0, 16384);
      f.deadline_ms = 0;  // no deadline of its own: with the node's default of none, it waits
      self->send(client.prefill, std::move(f));
    }
    int limited = 0;
    for (int answered = 0; answered < answers;) {
      bool more = true;
      self->receive(
        [&](caf::error& e) {
          ++answered;
          limited += e.code() == static_cast<std::uint8_t>(errc::limit_exceeded) ? 1 : 0;
        },
        [&](transfer_done&) { ++answered; },
        // A bound for the failure case only (an answer that never comes): the wait ends with
        // the last expected answer, however slow the machine is.
        caf::after(std::chrono::seconds{60}) >> [&] { more = false; });
      if (!more)
        break;
    }
    return limited;
  }
};

bool parked_reaches(node& n, std::uint64_t count) {
  return n.wait_health([&](const health_snapshot& h) { return h.parked_fetches == count; }, 20s);
}

TEST_CASE("F17: parked fetches are bounded per peer and in total, and go when their peer goes") {
  node_config cfg;
  cfg.transport = "tcp";
  cfg.max_parked_fetches = 30;
  cfg.max_parked_fetches_per_peer = 20;
  cfg.default_deadline_ms = 0;  // parked fetches wait without limit: only their peer ends them
  auto started = node::start(cfg);
  REQUIRE_MESSAGE(started, started.error().message);
  auto& prefill = *started.value();
  auto first = std::make_unique<flooder>(prefill.port());
  CHECK(first->park("a-", 25, 5) == 5);  // 20 parked: the per-peer limit
  CHECK(parked_reaches(prefill, 20));
  flooder second{prefill.port()};
  CHECK(second.park("b-", 15, 5) == 5);  // 10 more: the node's limit of 30
  CHECK(parked_reaches(prefill, 30));
  // The first peer leaves: its 20 parked fetches go with it, and the second may park again.
  first.reset();
  CHECK(parked_reaches(prefill, 10));
  CHECK(second.park("c-", 10, 0) == 0);
  CHECK(parked_reaches(prefill, 20));
  CHECK(prefill.health().healthy);
  prefill.stop(1s);
}

TEST_CASE("F17: a hostile prefill that answers a fetch with an empty or unknown error fails that receive only") {
  // A peer node's entry that speaks the sender's interface but answers every fetch with an error
  // no kvferry node sends: an empty one (CAF lets it cross the wire), or a code kvferry lacks.
  client_config cfg;
  caf::actor_system sys{cfg};
  auto answers = std::make_shared<std::vector<caf::error>>();
  answers->push_back(caf::error{});
  answers->push_back(caf::error{static_cast<std::uint8_t>(250), caf::atom("kvferry")});
  // CAF's own error, its context a duration CAF 0.17 cannot print (to_string would crash).
  answers->push_back(caf::make_error(caf::sec::runtime_error, unprintable_duration()));
  // The answers go in as a spawn argument: CAF 0.17's spawn of a function without arguments
  // dereferences an empty tuple pointer (UBSan reports it).
  auto liar_impl = [](sender_actor::pointer,
                      std::shared_ptr<std::vector<caf::error>> answers) -> sender_actor::behavior_type {
    return {
      [](announce_atom, const std::string&) {},
      [=](fetch_msg&) -> caf::result<transfer_done> {
        if (answers->empty())
          return caf::error{};
        auto e = answers->front();
        answers->erase(answers->begin());
        return e;
      },
      [](cancel_fetch_atom, const std::string&, std::uint64_t, bool) {},
      [](park_expired_atom, const std::string&, std::uint64_t) {},
      [](layout_atom) { return std::string{}; },
      [](identity_atom) { return process_identity{}; },
      [](decline_atom, const std::string&) { return cancel_result::not_found; },
      [](layer_atom, const caf::actor_addr&, const std::string&, std::uint32_t, std::uint32_t) {},
    };
  };
  sender_actor liar = sys.spawn(liar_impl, answers);
  auto port = sys.middleman().publish(liar, 0, "127.0.0.1");
  REQUIRE(port);
  node_config dcfg;
  dcfg.transport = "tcp";
  auto decode = node::start(dcfg);
  REQUIRE_MESSAGE(decode, decode.error().message);
  auto& d = *decode.value();
  std::vector<unsigned char> dst(4096, 0);
  auto region = d.register_region(dst.data(), dst.size()).value();
  auto peer = d.connect("127.0.0.1", *port);
  REQUIRE_MESSAGE(peer, peer.error().message);
  for (const char* id : {"empty-error", "unknown-code"}) {
    CAPTURE(id);
    auto r = d.receive(id, peer.value(), {{region, 0, 4096}});
    auto rr = r.wait_for(20s);
    REQUIRE(rr);
    CHECK(rr->status == transfer_status::failed);
    CHECK(rr->code == errc::malformed_message);
  }
  auto r = d.receive("unprintable-context", peer.value(), {{region, 0, 4096}});
  auto rr = r.wait_for(20s);
  REQUIRE(rr);
  CHECK(rr->status == transfer_status::failed);
  CHECK(rr->code == errc::internal_error);
  CHECK_MESSAGE(rr->message.find("runtime_error") != std::string::npos, rr->message);
  CHECK(d.health().healthy);
  d.stop(1s);
  caf::anon_send_exit(liar, caf::exit_reason::user_shutdown);
}

TEST_CASE("F17: a prefill that ends the decode's health supervisor leaves the decode unhealthy, "
          "saying why, and its stop() still returns") {
  // A fetch names the decode's health supervisor as its anchor (the prefill watches the decode
  // through it), so the prefill holds its address, and CAF 0.17 lets it end that actor: `kill`
  // skips the supervisor's exit handler, which would have taken the children down with it.
  auto how = caf::exit_reason::kill;
  SUBCASE("killed") {}
  SUBCASE("told to exit as if the node were stopping") { how = caf::exit_reason::user_shutdown; }
  client_config cfg;
  caf::actor_system sys{cfg};
  auto liar_impl = [](sender_actor::pointer, caf::exit_reason how) -> sender_actor::behavior_type {
    return {
      [](announce_atom, const std::string&) {},
      [how](fetch_msg& f) -> caf::result<transfer_done> {
        if (auto anchor = caf::actor_cast<caf::actor>(f.anchor))
          caf::anon_send_exit(anchor, how);
        return caf::make_error(caf::sec::runtime_error);
      },
      [](cancel_fetch_atom, const std::string&, std::uint64_t, bool) {},
      [](park_expired_atom, const std::string&, std::uint64_t) {},
      [](layout_atom) { return std::string{}; },
      [](identity_atom) { return process_identity{}; },
      [](decline_atom, const std::string&) { return cancel_result::not_found; },
      [](layer_atom, const caf::actor_addr&, const std::string&, std::uint32_t, std::uint32_t) {},
    };
  };
  sender_actor liar = sys.spawn(liar_impl, how);
  auto port = sys.middleman().publish(liar, 0, "127.0.0.1");
  REQUIRE(port);
  node_config dcfg;
  dcfg.transport = "tcp";
  auto decode = node::start(dcfg);
  REQUIRE_MESSAGE(decode, decode.error().message);
  auto& d = *decode.value();
  std::vector<unsigned char> dst(4096, 0);
  auto region = d.register_region(dst.data(), dst.size()).value();
  auto peer = d.connect("127.0.0.1", *port);
  REQUIRE_MESSAGE(peer, peer.error().message);
  auto rr = d.receive("ends-the-anchor", peer.value(), {{region, 0, 4096}}).wait_for(20s);
  REQUIRE(rr);
  CHECK(rr->status == transfer_status::failed);
  // Nothing restarts the supervisor: the node says so instead of reporting itself healthy.
  CHECK(node_access::of(d).health->wait_for([](const health_snapshot& h) { return !h.healthy; },
                                            20s));
  CHECK_MESSAGE(d.health().reason.find("health supervisor ended") != std::string::npos,
                d.health().reason);
  // stop() used to wait for ever for the children only the supervisor told to exit. A hang is
  // the failure, so this waits on the wall clock: 60 s for what takes milliseconds.
  std::promise<void> stopped;
  auto done = stopped.get_future();
  std::thread([&d, &stopped] {
    d.stop(1s);
    stopped.set_value();
  }).detach();
  if (done.wait_for(60s) != std::future_status::ready) {
    // The node cannot be torn down any more: say so and end the test process here (doctest
    // would report only at the end of the test case, which never comes).
    std::fputs("FAILED: the decode's stop() did not return within 60 s\n", stderr);
    std::_Exit(1);
  }
  caf::anon_send_exit(liar, caf::exit_reason::user_shutdown);
}

TEST_CASE("F17: a same-host peer's forged shared-memory rkey is refused before UCX maps it, and "
          "its real one is served") {
  node_config cfg;
  cfg.transport = "shm";
  auto started = node::start(cfg);
  REQUIRE_MESSAGE(started, started.error().message);
  auto& prefill = *started.value();
  std::vector<unsigned char> src(4 * 4096, 0xEF);
  auto region = prefill.register_region(src.data(), src.size()).value();

  client_config ccfg;
  caf::actor_system sys{ccfg};
  transport::engine_options eo;
  eo.tls = "shm";
  auto eng = transport::engine::start(eo, nullptr);
  REQUIRE_MESSAGE(eng, eng.error().message);
  auto mem = eng.value()->allocate_memory(4 * 4096);
  REQUIRE_MESSAGE(mem, mem.error().message);
  const auto address = eng.value()->worker_address();
  const auto& rkey = mem.value()->packed_rkey();
  auto keys = transport::shm_keys_of(rkey.data(), rkey.size(), address.data(), address.size());
  if (keys.segments.empty()) {
    MESSAGE("UCX allocated no shared-memory segment here; skipped");
    prefill.stop(1s);
    return;
  }
  auto remote = sys.middleman().remote_actor<sender_actor>("127.0.0.1", prefill.port());
  REQUIRE_MESSAGE(remote, sys.render(remote.error()));
  const auto base = reinterpret_cast<std::uint64_t>(mem.value()->base());
  auto* bytes = static_cast<unsigned char*>(mem.value()->base());
  transport::window_lease window{eng.value()->windows(), {{base, 4 * 4096}}};
  auto fetch = [&](const std::string& id, std::vector<std::uint8_t> key) {
    fetch_msg f;
    f.request_id = id;
    f.node_name = "same-host";
    f.epoch = 0x5158;
    f.worker_address = address;
    f.rkeys = {std::move(key)};
    f.region_bases = {base};
    f.region_bytes = {4 * 4096};
    f.blocks = {{base, 4096, 0}};
    f.deadline_ms = 5000;
    f.window = window.token();
    caf::scoped_actor self{sys};
    caf::expected<std::uint64_t> out{caf::sec::unexpected_message};
    self->request(*remote, 20s, std::move(f))
      .receive([&](transfer_done& d) { out = d.bytes; }, [&](caf::error& e) { out = e; });
    return out;
  };
  // The key's segment moved 1 TiB away: UCX would write 1 TiB before its mapping.
  // Where the segment's blob starts: after the md map and the memory type, each blob is a
  // length byte and its bytes; the segment's is the one of 12 (sysv) or 24+ (posix) bytes.
  REQUIRE(keys.segments.size() == 1);
  std::size_t at = 0;
  {
    std::uint64_t map = 0;
    std::memcpy(&map, rkey.data(), 8);
    std::size_t pos = 9;
    for (unsigned md = 0; md < 64 && at == 0; ++md) {
      if (!(map & (std::uint64_t{1} << md)))
        continue;
      if (rkey[pos] == 12 || rkey[pos] >= 24)
        at = pos + 1;
      pos += 1 + rkey[pos];
    }
  }
  REQUIRE(at != 0);
  auto forged = rkey;
  const bool sysv = keys.segments[0].type == transport::shm_segment::kind::sysv;
  std::uint64_t seen_base = 0;
  std::memcpy(&seen_base, &forged[at + (sysv ? 4 : 8)], 8);
  REQUIRE(seen_base == keys.segments[0].base);
  std::uint64_t moved = keys.segments[0].base + (std::uint64_t{1} << 40);
  std::memcpy(&forged[at + (sysv ? 4 : 8)], &moved, 8);
  auto s1 = prefill.send("moved", {{region, 0, 4096}});
  CHECK(code_of(fetch("moved", forged)) == errc::out_of_range);
  // A segment that does not exist here: UCX 1.13 would crash unpacking it.
  auto missing = rkey;
  if (sysv) {
    std::uint32_t no_such = 0x7ffffff0;
    std::memcpy(&missing[at], &no_such, 4);
  } else {
    std::uint64_t seg = keys.segments[0].id | ((std::uint64_t{1} << 30) - 2);
    std::memcpy(&missing[at], &seg, 8);
  }
  auto s2 = prefill.send("missing", {{region, 0, 4096}});
  CHECK(code_of(fetch("missing", missing)) == errc::malformed_message);
  CHECK(std::all_of(bytes, bytes + 4 * 4096, [](unsigned char b) { return b == 0; }));
  // The real key is served, over shared memory, and writes where it should.
  auto s3 = prefill.send("real", {{region, 4096, 4096}});
  auto answer = fetch("real", rkey);
  REQUIRE(answer);
  CHECK(*answer == 4096);
  CHECK(bytes[0] == 0xEF);
  CHECK(bytes[4095] == 0xEF);
  CHECK(bytes[4096] == 0);
  CHECK(prefill.health().healthy);
  prefill.stop(1s);
}

TEST_CASE("F17: messages a node does not expect, and reasons it cannot print, are dropped unprinted") {
  // CAF 0.17 prints an unexpected message (its default handler) and renders errors with their
  // context; a duration with an out-of-range unit crashes either. A peer can send both.
  prefill_node fixture{0xEF};
  auto& prefill = *fixture.owned;
  hostile_client client{prefill.port()};
  auto entry = caf::actor_cast<caf::actor>(client.prefill);
  std::optional<hostile_client> fresh;  // a new peer, for an entry that was restarted
  auto* legit = &client;
  caf::scoped_actor self{client.sys};
  SUBCASE("unexpected messages, asked and told") {
    self->send(entry, unprintable_duration());
    self->send(entry, std::string{"hello"}, unprintable_duration());
    caf::error answer;
    self->request(entry, 20s, unprintable_duration())
      .receive([](int) {}, [&](caf::error& e) { answer = e; });
    CHECK(answer == caf::sec::unexpected_message);
  }
  SUBCASE("a parked fetch's sender ends with an unprintable reason") {
    // The sender watches a parked fetch's sender; its DOWN carries the peer's exit reason.
    auto parker_impl = [](caf::event_based_actor* me, sender_actor entry, fetch_msg f) {
      me->send(entry, std::move(f));
      return caf::behavior{[](int) {}};
    };
    auto f = client.fetch("parked", 0, 4096, 0, 16384);
    f.deadline_ms = 0;
    auto parker = client.sys.spawn(parker_impl, client.prefill, f);
    REQUIRE(parked_reaches(prefill, 1));
    self->send_exit(parker, caf::make_error(caf::sec::runtime_error, unprintable_duration()));
    CHECK(parked_reaches(prefill, 0));
  }
  SUBCASE("the published entry is ended with an unprintable exit reason") {
    // The entry ends (CAF 0.17 lets a peer end any actor it can address); the supervisor reads
    // the reason, restarts it and publishes it again.
    self->send_exit(entry, caf::make_error(caf::sec::runtime_error, unprintable_duration()));
    REQUIRE(node_access::of(prefill).health->wait_entry_publications(1, 20s));
    // This client's CAF may still hold the old entry for that port: a new peer looks it up.
    legit = &fresh.emplace(prefill.port());
  }
  SUBCASE("the published entry is told to exit as if the node were stopping") {
    // user_shutdown is what the node's own stop sends: from a peer, it is one more crash.
    self->send_exit(entry, caf::exit_reason::user_shutdown);
    REQUIRE(node_access::of(prefill).health->wait_entry_publications(1, 20s));
    // This client's CAF may still hold the old entry for that port: a new peer looks it up.
    legit = &fresh.emplace(prefill.port());
  }
  // Whatever came before, a legitimate fetch is served.
  auto s = prefill.send("after", {{fixture.region, 0, 4096}});
  check_served(legit->ask(legit->fetch("after", 0, 4096, 0, 16384)), 4096, *legit, 0xEF, s);
  CHECK(prefill.health().healthy);
}

TEST_CASE("F17: a fetching peer hears every answer from the node's entry, never from a transfer's own actor") {
  // CAF 0.17 lets a peer end any actor it can name (an exit message, `kill` included). Were a
  // transfer's own actor to answer, the fetcher would learn its address and could end the
  // transfer mid-puts, leaving the offer's memory quarantined: the entry relays every answer.
  prefill_node fixture{0x3C};
  auto& prefill = *fixture.owned;
  hostile_client client{prefill.port()};
  auto s = prefill.send("named", {{fixture.region, 0, 4096}});
  caf::scoped_actor self{client.sys};
  auto ask = [&](fetch_msg f, caf::actor_addr& answered_by) {
    caf::expected<std::uint64_t> out{caf::sec::unexpected_message};
    self->request(client.prefill, 20s, std::move(f))
      .receive(
        [&](transfer_done& d) {
          out = d.bytes;
          answered_by = caf::actor_cast<caf::actor_addr>(self->current_sender());
        },
        [&](caf::error& e) {
          out = e;
          answered_by = caf::actor_cast<caf::actor_addr>(self->current_sender());
        });
    return out;
  };
  caf::actor_addr refused_by, served_by;
  // Does not fit the offer: the transfer's actor refuses it (the offer waits on).
  auto refused = ask(client.fetch("named", 0, 8192, 0, 16384), refused_by);
  CHECK(code_of(refused) == errc::size_mismatch);
  check_served(ask(client.fetch("named", 0, 4096, 0, 16384), served_by), 4096, client, 0x3C, s);
  CHECK(refused_by == client.prefill.address());
  CHECK(served_by == client.prefill.address());
}
