// The buffer pool actor: leases, bounded waits, release by holder death.
#include "actors/buffer_pool_actor.hpp"
#include "actors/node_health.hpp"
#include "actors/transport_actor.hpp"
#include "actors/transport_services.hpp"

#include <doctest/doctest.h>

#include <functional>

using namespace kvferry;
using namespace std::chrono_literals;

namespace {

struct pool_fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<child_directory> children = std::make_shared<child_directory>();
  std::shared_ptr<node_health> health = std::make_shared<node_health>(1024);
  std::shared_ptr<staging_slots> table = std::make_shared<staging_slots>();
  pool_spec spec;
  buffer_pool_actor pool;

  explicit pool_fixture(std::uint32_t slots) {
    auto services = std::make_shared<transport_services>();
    auto eng = transport::engine::start({}, nullptr);
    REQUIRE_MESSAGE(eng, eng.error().message);
    services->engine = std::shared_ptr<transport::engine>(std::move(eng.value()));
    services->copier = gpu::make_cpu_copy_engine();
    cfg.add_message_types<caf::id_block::kvferry>();
    sys = std::make_unique<caf::actor_system>(cfg);
    // The pool has the transport allocate its buffers, and asks the transport's op ledger
    // whether a dead holder's operations are quiescent.
    node_children kids;
    kids.transport = spawn_transport_actor(*sys, transport_spec{services, health});
    children->set(kids);
    spec = pool_spec{slots, 4096, table, children, health, services->ledger};
    spawn();
  }
  void spawn() {
    pool = spawn_buffer_pool_actor(*sys, spec);
    caf::scoped_actor self{*sys};
    self->request(pool, 10s, ready_atom::value)
      .receive([&](std::uint32_t n) { REQUIRE(n == spec.slots); },
               [&](caf::error& e) { FAIL(caf::to_string(e)); });
  }
  // The pool crashes (killed, as by an exception); `meanwhile` runs once it is gone, then its
  // successor starts with the same spec, as the health supervisor restarts it.
  void crash_and_restart(const std::function<void()>& meanwhile = [] {}) {
    caf::scoped_actor self{*sys};
    self->monitor(pool);
    caf::anon_send_exit(pool, caf::exit_reason::kill);
    self->receive([](caf::down_msg&) {});
    meanwhile();
    spawn();
  }
  ~pool_fixture() {
    caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(children->current().transport, caf::exit_reason::user_shutdown);
    children->set({});
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

// `holder` gives its lease back; `other`, asking next, gets that very slot.
void check_released_to(pool_fixture& f, caf::scoped_actor& holder, caf::scoped_actor& other,
                       const lease& l) {
  holder->send(f.pool, release_atom::value, l.slot);
  auto again = acquire(other, f.pool, 5000);
  REQUIRE(again);
  CHECK(again->slot == l.slot);
}

}  // namespace

TEST_CASE("a lease is a registered staging buffer, and a full pool's wait is bounded") {
  pool_fixture f{1};
  caf::scoped_actor holder{*f.sys};
  auto l = acquire(holder, f.pool, 100);
  REQUIRE(l);
  CHECK(l->buffer.addr == f.table->buffers[0].addr);
  CHECK(l->buffer.bytes == 4096);
  caf::scoped_actor other{*f.sys};
  auto t0 = std::chrono::steady_clock::now();
  auto none = acquire(other, f.pool, 50);
  REQUIRE(!none);
  CHECK(static_cast<errc>(none.error().code()) == errc::timed_out);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);  // bounded (50 ms asked; 5 s: loaded CI)
  CHECK(f.stats().waiting == 0);
  check_released_to(f, holder, other, *l);
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

// A restarted pool hands out the same memory; without the leases of its predecessor it would give
// a slot to a second holder while the first still copies into it, or hand out a poisoned one.
TEST_CASE("a restarted pool keeps a live holder's lease: the slot is not handed out until given back") {
  pool_fixture f{1};
  caf::scoped_actor holder{*f.sys};
  auto l = acquire(holder, f.pool, 100);
  REQUIRE(l);
  f.crash_and_restart();
  CHECK(f.stats().leased == 1);
  caf::scoped_actor other{*f.sys};
  auto none = acquire(other, f.pool, 50);
  REQUIRE(!none);
  CHECK(static_cast<errc>(none.error().code()) == errc::timed_out);
  check_released_to(f, holder, other, *l);  // released to the restarted pool
}

TEST_CASE("a poisoned slot stays out of service across a pool restart") {
  pool_fixture f{2};
  caf::scoped_actor holder{*f.sys};
  auto l = acquire(holder, f.pool, 100);
  REQUIRE(l);
  holder->send(f.pool, poison_atom::value, l->slot);
  CHECK(f.stats().poisoned == 1);
  f.crash_and_restart();
  auto s = f.stats();
  CHECK(s.poisoned == 1);
  CHECK(s.leased == 0);
  CHECK(f.health->snapshot().poisoned == 1);  // counted once, not again by the restart
  caf::scoped_actor a{*f.sys};
  auto la = acquire(a, f.pool, 5000);
  REQUIRE(la);
  CHECK(la->slot != l->slot);
  caf::scoped_actor b{*f.sys};
  CHECK(!acquire(b, f.pool, 50));  // the only other slot is poisoned
}

TEST_CASE("a holder that dies after the pool restarted gives its slot back through the new pool") {
  pool_fixture f{1};
  {
    caf::scoped_actor holder{*f.sys};
    REQUIRE(acquire(holder, f.pool, 100));
    f.crash_and_restart();
    CHECK(f.stats().leased == 1);
  }  // the holder terminates holding the slot; nothing of it is in flight
  caf::scoped_actor other{*f.sys};
  auto l = acquire(other, f.pool, 5000);
  REQUIRE(l);
  CHECK(f.stats().poisoned == 0);
}

TEST_CASE("a holder that died while the pool was down gives its slot back to the restarted pool") {
  pool_fixture f{1};
  auto holder = std::make_unique<caf::scoped_actor>(*f.sys);
  REQUIRE(acquire(*holder, f.pool, 100));
  f.crash_and_restart([&] { holder.reset(); });
  caf::scoped_actor other{*f.sys};
  auto l = acquire(other, f.pool, 5000);
  REQUIRE(l);
  CHECK(f.stats().leased == 1);  // other's lease only
}
