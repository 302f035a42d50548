// held_requests (actors/held_requests.hpp): waiting requests held as state (the offer book, the
// admission queue). The flows through the sender and the receiver are in virtual_time_tests.cpp;
// here the container's own promises: arrival order, one taker per entry, deadlines, close.
#include "actors/handle_state.hpp"
#include "actors/held_requests.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

using namespace kvferry;
using namespace std::chrono_literals;

namespace {

struct test_spec {
  request_context ctx;
  int tag = 0;
};

struct rig {
  std::shared_ptr<request_registry> registry = std::make_shared<request_registry>();
  std::shared_ptr<node_health> health = std::make_shared<node_health>(16);
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<detail::handle_state>> handles;

  held_request<test_spec> make(const std::string& id, int tag, std::uint32_t deadline_ms = 0) {
    auto h = std::make_shared<detail::handle_state>(id, std::weak_ptr<detail::event_sink>{});
    REQUIRE(registry->reserve(id, h));
    handles.push_back(h);
    request_context ctx{h, registry, health, nullptr, deadline_ms, nullptr, nullptr};
    return make_held(test_spec{ctx, tag}, request_side::receive, t0);
  }
};

std::vector<int> tags(const std::vector<held_request<test_spec>>& es) {
  std::vector<int> out;
  for (auto& e : es)
    out.push_back(e.spec.tag);
  return out;
}

}  // namespace

TEST_CASE("held requests leave in arrival order or by id, each exactly once, and an id is held once") {
  rig r;
  held_requests<test_spec> held;
  for (int i = 1; i <= 4; ++i) {
    auto e = r.make("r" + std::to_string(i), i);
    CHECK(held.add(e));
  }
  auto again = r.make("again", 9);
  auto dup_ctx = again.spec.ctx;  // the same id, another request (the registry would refuse it)
  dup_ctx.handle = std::make_shared<detail::handle_state>("again", std::weak_ptr<detail::event_sink>{});
  auto dup = make_held(test_spec{dup_ctx, 10}, request_side::receive, r.t0);
  CHECK(held.add(again));
  CHECK_FALSE(held.add(dup));  // the same id twice: refused, nothing changes
  CHECK(held.size() == 5);
  CHECK(r.health->in_flight() == 6);  // every owner made counts as a request started
  // A take that does not fit leaves the entry where it is; one that fits hands it over.
  int seen = 0;
  CHECK(held.take_if("r2", [](const auto&) { return false; }, [&](auto&) { ++seen; }));
  CHECK(seen == 0);
  CHECK(held.take_if("r2", [](const auto& e) { return e.spec.tag == 2; },
                     [&](auto& e) { seen = e.spec.tag; }));
  CHECK(seen == 2);
  CHECK_FALSE(held.take_if("r2", [](const auto&) { return true; }, [&](auto&) { seen = -1; }));
  CHECK(seen == 2);
  CHECK(held.update("r3", [](auto& e) { e.spec.tag = 33; }));
  CHECK_FALSE(held.update("r2", [](auto&) {}));
  CHECK_FALSE(held.take("r2").has_value());
  std::vector<int> order;
  while (held.take_front([&](auto& e) { order.push_back(e.spec.tag); })) {
  }
  CHECK(order == std::vector<int>{1, 33, 4, 9});
  CHECK(held.size() == 0);
  end_held(std::move(dup), make_result(transfer_status::cancelled, errc::cancelled));
}

TEST_CASE("held requests past their deadline leave together, earliest first, and only those") {
  rig r;
  held_requests<test_spec> held;
  auto a = r.make("a", 1, 300);
  auto b = r.make("b", 2, 100);
  auto c = r.make("c", 3);  // no deadline
  auto d = r.make("d", 4, 200);
  for (auto* e : {&a, &b, &c, &d})
    REQUIRE(held.add(*e));
  REQUIRE(held.next_deadline());
  CHECK(*held.next_deadline() == r.t0 + 100ms);
  CHECK(held.take_expired(r.t0 + 99ms).empty());
  CHECK(tags(held.take_expired(r.t0 + 200ms)) == std::vector<int>{2, 4});
  CHECK(*held.next_deadline() == r.t0 + 300ms);
  CHECK(held.take("a").has_value());  // taken by id: its deadline goes with it
  CHECK_FALSE(held.next_deadline());
  CHECK(held.take_expired(r.t0 + 1h).empty());
  CHECK(held.size() == 1);
}

TEST_CASE("closing takes every held request out, refuses new ones, and each ends resolved and released once") {
  // The count is process-wide: other cases in the same process raise it on purpose.
  const auto violations_before = detail::handle_state::violations();
  rig r;
  held_requests<test_spec> held;
  for (int i = 1; i <= 3; ++i) {
    auto e = r.make("c" + std::to_string(i), i, 1000);
    REQUIRE(held.add(e));
  }
  auto late = r.make("late", 4);
  auto left = held.close();
  CHECK(tags(left) == std::vector<int>{1, 2, 3});
  CHECK_FALSE(held.add(late));
  CHECK(held.size() == 0);
  CHECK_FALSE(held.next_deadline());
  left.push_back(std::move(late));
  for (auto& e : left)
    end_held(std::move(e), make_result(transfer_status::failed, errc::stopped));
  for (auto& h : r.handles) {
    REQUIRE(h->result());
    CHECK(h->result()->code == errc::stopped);
    CHECK(h->released());
  }
  CHECK(r.health->in_flight() == 0);
  CHECK(detail::handle_state::violations() == violations_before);
  bool recent = false;
  CHECK_FALSE(r.registry->owner_of("c1", &recent));
  CHECK(recent);  // ended and released: the id is free again
}
