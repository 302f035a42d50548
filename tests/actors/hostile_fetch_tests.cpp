// F17: malformed or hostile fetches sent straight to a prefill node's published sender, by a
// client with its own CAF actor system and its own UCX engine and memory (so that a put that
// should not happen would really land in memory this test can inspect).
#include "actors/messages.hpp"
#include "kvferry/node.hpp"
#include "transport/engine.hpp"

#include <caf/io/all.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <future>

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
  sender_actor prefill;

  explicit hostile_client(std::uint16_t port) {
    transport::engine_options eo;
    eo.tls = "tcp";
    auto e = transport::engine::start(eo, nullptr);
    REQUIRE_MESSAGE(e, e.error().message);
    engine = std::move(e.value());
    reg = engine->register_memory(memory.data(), memory.size()).value();
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

errc code_of(const caf::expected<std::uint64_t>& x) {
  return x ? errc::none : static_cast<errc>(x.error().code());
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
    // declared region.
    auto answer = client.ask(client.fetch("victim", 8192, 4096, 0, 4096));
    CHECK(code_of(answer) == errc::out_of_range);
    CHECK(client.untouched());
    auto r = s.wait_for(20s);
    REQUIRE(r);
    CHECK(r->code == errc::out_of_range);
  }
  SUBCASE("a size that differs from the sender's block") {
    auto s = prefill.send("victim", {{region, 0, 4096}});
    auto answer = client.ask(client.fetch("victim", 0, 8192, 0, 16384));
    CHECK(code_of(answer) == errc::size_mismatch);
    CHECK(client.untouched());
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
  auto served = after_answer.get();
  REQUIRE(served);
  CHECK(*served == 4096);
  CHECK(client.memory[0] == 0xCD);
  auto r = s.wait_for(20s);
  REQUIRE(r);
  CHECK(r->status == transfer_status::succeeded);
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
  auto served = client.ask(f);
  REQUIRE(served);
  CHECK(*served == 4096);
  CHECK(std::all_of(client.memory.begin(), client.memory.begin() + 4096,
                    [](auto b) { return b == 0xAB; }));
  auto r = s.wait_for(20s);
  REQUIRE(r);
  CHECK(r->status == transfer_status::succeeded);
}
