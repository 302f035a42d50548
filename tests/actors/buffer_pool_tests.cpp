// The buffer pool actor: leases, bounded waits, release by holder death.
#include "actors/buffer_pool_actor.hpp"
#include "actors/node_core.hpp"
#include "actors/transport_actor.hpp"

#include <doctest/doctest.h>

using namespace kvferry;
using namespace std::chrono_literals;

namespace {

struct pool_fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<node_core> core;
  buffer_pool_actor pool;

  explicit pool_fixture(std::uint32_t slots) {
    core = std::make_shared<node_core>(node_config{}, 1);
    auto eng = transport::engine::start({}, nullptr);
    REQUIRE_MESSAGE(eng, eng.error().message);
    core->engine = std::shared_ptr<transport::engine>(std::move(eng.value()));
    for (std::uint32_t i = 0; i < slots; ++i)
      core->staging.push_back(core->engine->allocate_memory(4096).value());
    sys = std::make_unique<caf::actor_system>(cfg);
    // The pool asks the transport whether a dead holder's operations are quiescent.
    node_children kids;
    kids.transport = spawn_transport_actor(*sys, core);
    core->set_children(kids);
    pool = spawn_buffer_pool_actor(*sys, core);
  }
  ~pool_fixture() {
    caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(core->children().transport, caf::exit_reason::user_shutdown);
    core->set_children({});
    sys.reset();
  }

  pool_stats stats() {
    caf::scoped_actor self{*sys};
    pool_stats out;
    self->request(pool, 5s, stats_atom::value)
      .receive([&](pool_stats s) { out = s; }, [&](caf::error& e) { FAIL(caf::to_string(e)); });
    return out;
  }
};

// Leases a slot as `self`; the error code when none came within wait_ms.
caf::expected<lease> acquire(caf::scoped_actor& self, buffer_pool_actor& pool,
                             std::uint32_t wait_ms) {
  caf::expected<lease> out{caf::sec::unexpected_message};
  self->request(pool, 10s, acquire_atom::value, wait_ms)
    .receive([&](lease l) { out = l; }, [&](caf::error& e) { out = std::move(e); });
  return out;
}

}  // namespace

TEST_CASE("a lease is a registered staging buffer, and a full pool's wait is bounded") {
  pool_fixture f{1};
  caf::scoped_actor holder{*f.sys};
  auto l = acquire(holder, f.pool, 100);
  REQUIRE(l);
  CHECK(l->bytes == 4096);
  CHECK(l->addr == reinterpret_cast<std::uint64_t>(f.core->staging[0]->base()));
  caf::scoped_actor other{*f.sys};
  auto t0 = std::chrono::steady_clock::now();
  auto none = acquire(other, f.pool, 50);
  REQUIRE(!none);
  CHECK(static_cast<errc>(none.error().code()) == errc::timed_out);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);  // bounded (50 ms asked; 5 s: loaded CI)
  CHECK(f.stats().waiting == 0);
  holder->send(f.pool, release_atom::value, l->slot);
  auto again = acquire(other, f.pool, 5000);
  REQUIRE(again);
  CHECK(again->slot == l->slot);
}

TEST_CASE("only the holder can release a lease") {
  pool_fixture f{1};
  caf::scoped_actor holder{*f.sys};
  caf::scoped_actor stranger{*f.sys};
  auto l = acquire(holder, f.pool, 100);
  REQUIRE(l);
  stranger->send(f.pool, release_atom::value, l->slot);
  CHECK(f.stats().leased == 1);
}

TEST_CASE("F6: a pool of one slot survives a storm of holders that exit early") {
  pool_fixture f{1};
  // 200 holders each lease the only slot and terminate without releasing it.
  for (int i = 0; i < 200; ++i) {
    caf::scoped_actor early_exit{*f.sys};
    auto l = acquire(early_exit, f.pool, 5000);
    REQUIRE(l);
  }
  caf::scoped_actor last{*f.sys};
  auto l = acquire(last, f.pool, 5000);
  REQUIRE(l);
  auto s = f.stats();
  CHECK(s.slots == 1);
  CHECK(s.leased == 1);
  CHECK(s.waiting == 0);
  CHECK(s.poisoned == 0);  // their transport had nothing of theirs in flight
}
