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

TEST_CASE("layers land once each, a peer's repeats and wrong counts change nothing, and waiters wake") {
  auto sink = std::make_shared<detail::event_sink>();
  auto st = std::make_shared<detail::handle_state>("layered", sink);
  transfer_handle h{st};
  CHECK(h.layers_landed() == 0);
  CHECK_FALSE(h.wait_layer(0, 0ms));
  // A waiter on another thread wakes when its layer lands.
  auto waiter = std::async(std::launch::async, [&] { return h.wait_layer(2, 20s); });
  CHECK(st->land_layer(2, 3));
  CHECK(waiter.get());
  CHECK_FALSE(st->land_layer(2, 3));  // a repeat
  CHECK_FALSE(st->land_layer(0, 4));  // another count than the first message gave
  CHECK_FALSE(st->land_layer(3, 3));  // outside the count
  CHECK_FALSE(st->land_layer(0, 0));
  CHECK_FALSE(st->land_layer(0, max_layers + 1));
  CHECK(st->land_layer(0, 3));
  CHECK(h.layers_landed() == 2);
  auto evs = sink->drain();
  REQUIRE(evs.size() == 2);
  CHECK(evs[0].kind == event_kind::layer_landed);
  CHECK(evs[0].layer == 2);
  CHECK(evs[0].layers == 3);
  CHECK(evs[1].layer == 0);
  // A transfer that ends without layer 1 wakes its waiter with false.
  auto never = std::async(std::launch::async, [&] { return h.wait_layer(1, 20s); });
  CHECK(st->resolve({transfer_status::failed, errc::timed_out, "deadline", 0, {}}));
  CHECK_FALSE(never.get());

  // The send side claims each layer once, inside its count.
  auto send = std::make_shared<detail::handle_state>("sent", sink);
  CHECK(send->claim_layer(0) == errc::invalid_argument);  // not layered
  send->set_layers(2);
  CHECK(send->claim_layer(1) == errc::none);
  CHECK(send->claim_layer(1) == errc::invalid_argument);
  CHECK(send->claim_layer(2) == errc::out_of_range);
  CHECK(send->claim_layer(0) == errc::none);
}
