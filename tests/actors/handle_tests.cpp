// transfer_handle / handle_state: exactly-once resolution and what waiters may rely on.
#include "actors/event_sink.hpp"
#include "actors/handle_state.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <thread>

using namespace kvferry;
using namespace std::chrono_literals;

TEST_CASE("a handle resolves once, and a second resolve or release is refused and counted") {
  auto sink = std::make_shared<detail::event_sink>();
  auto st = std::make_shared<detail::handle_state>("h1", sink);
  transfer_handle h{st};
  auto before = detail::handle_state::violations();
  CHECK(h.status() == transfer_status::pending);
  CHECK(st->resolve({transfer_status::succeeded, errc::none, {}, 10, {}}));
  CHECK(!st->resolve({transfer_status::failed, errc::internal_error, "again", 0, {}}));
  CHECK(st->release());
  CHECK(!st->release());
  CHECK(detail::handle_state::violations() == before + 2);
  CHECK(h.result()->status == transfer_status::succeeded);
  auto evs = sink->drain();
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].kind == event_kind::completed);
  CHECK(evs[1].kind == event_kind::released);
  CHECK(sink->drain().empty());
}

TEST_CASE("waiters see the result only after every on_done callback has returned") {
  // The demo once freed what a callback captured as soon as wait_for() returned, while the
  // callback was still about to run on the actor's thread.
  auto st = std::make_shared<detail::handle_state>("h2", std::weak_ptr<detail::event_sink>{});
  transfer_handle h{st};
  std::promise<void> go;
  auto go_f = go.get_future();
  std::atomic<bool> callback_done{false};
  h.on_done([&](const transfer_result&) {
    go_f.wait();
    callback_done = true;
  });
  std::thread resolver{[&] { st->resolve({transfer_status::succeeded, errc::none, {}, 1, {}}); }};
  // The callback is blocked: the result must not be visible yet.
  CHECK(!h.wait_for(50ms).has_value());
  CHECK(!h.result().has_value());
  CHECK(h.status() == transfer_status::pending);
  go.set_value();
  auto r = h.wait_for(20s);
  REQUIRE(r.has_value());
  CHECK(callback_done.load());
  resolver.join();
}

TEST_CASE("on_done after the result runs at once on the caller's thread") {
  auto st = std::make_shared<detail::handle_state>("h3", std::weak_ptr<detail::event_sink>{});
  st->resolve({transfer_status::cancelled, errc::cancelled, "x", 0, {}});
  transfer_handle h{st};
  auto caller = std::this_thread::get_id();
  std::thread::id ran_on;
  h.on_done([&](const transfer_result& r) {
    ran_on = std::this_thread::get_id();
    CHECK(r.status == transfer_status::cancelled);
  });
  CHECK((ran_on == caller));
}

TEST_CASE("an empty handle reports failure instead of crashing") {
  transfer_handle h;
  CHECK(!h.valid());
  CHECK(h.status() == transfer_status::failed);
  REQUIRE(h.result());
  CHECK(h.result()->code == errc::invalid_argument);
  CHECK(!h.released());
}

TEST_CASE("once a waiter sees the result or the release, poll's queue holds the event") {
  // The Python suite once saw wait_released() return while the released event was not queued
  // yet. Each round races a resolver thread against a waiter; the old order lost some rounds.
  auto sink = std::make_shared<detail::event_sink>();
  for (int round = 0; round < 500; ++round) {
    auto st = std::make_shared<detail::handle_state>("race", sink);
    transfer_handle h{st};
    std::thread owner{[&] {
      st->resolve({transfer_status::succeeded, errc::none, {}, 1, {}});
      st->release();
    }};
    REQUIRE(h.wait_for(20s).has_value());
    auto first = sink->drain();
    REQUIRE(h.wait_released(20s));
    auto second = sink->drain();
    owner.join();
    first.insert(first.end(), second.begin(), second.end());
    REQUIRE(first.size() == 2);
    CHECK(first[0].kind == event_kind::completed);
    CHECK(first[1].kind == event_kind::released);
    CHECK(first[1].result.status == transfer_status::succeeded);
  }
}
