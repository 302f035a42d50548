// Test support: two nodes in this process connected over real UCX (tcp) and CAF networking,
// each with a registered pool, and helpers that wait for events with a generous bound.
#pragma once

#include "kvferry/node.hpp"
#include "kvferry/transfer.hpp"
#include "actors/handle_state.hpp"
#include "tests/support/node_testing.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <thread>
#include <tuple>
#include <utility>

namespace kvferry::test {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// Generous bound for anything that should take milliseconds: tests wait for events, and only
// fail when an event never comes.
inline constexpr auto patience = 20s;

// A prefill (its real transport wrapped by `prefill_faults`, if any) and a decode, both of `cfg`.
inline std::pair<std::unique_ptr<node>, std::unique_ptr<node>> start_two(
  const node_config& cfg, std::shared_ptr<transport::fault_plan> prefill_faults) {
  auto p = prefill_faults ? testing::start_with_faults(cfg, std::move(prefill_faults))
                          : node::start(cfg);
  REQUIRE_MESSAGE(p, p.error().message);
  auto d = node::start(cfg);
  REQUIRE_MESSAGE(d, d.error().message);
  return {std::move(p.value()), std::move(d.value())};
}

struct node_pair {
  std::unique_ptr<node> prefill, decode;
  std::vector<unsigned char> src, dst;
  region_id src_region = 0, dst_region = 0;
  peer_id peer;
  // Exactly-once violations are counted process-wide; each test compares with its start.
  std::uint64_t violations_at_start = detail::handle_state::violations();

  // `prefill_faults`: a fault plan wrapping the prefill node's real transport (or none).
  explicit node_pair(std::size_t pool_bytes, node_config cfg = {},
                     std::shared_ptr<transport::fault_plan> prefill_faults = nullptr) {
    cfg.transport = "tcp";
    // The connect must succeed; its bound matters only if it never does. The default 5 s is
    // too short where CAF's network thread does not run for seconds (TSan on a busy machine).
    if (cfg.connect_timeout_ms == node_config{}.connect_timeout_ms)
      cfg.connect_timeout_ms = 60000;
    std::tie(prefill, decode) = start_two(cfg, std::move(prefill_faults));
    src.resize(pool_bytes);
    dst.assign(pool_bytes, 0);
    for (std::size_t i = 0; i < src.size(); ++i)
      src[i] = static_cast<unsigned char>((i * 131) ^ (i >> 9));
    src_region = prefill->register_region(src.data(), src.size()).value();
    dst_region = decode->register_region(dst.data(), dst.size()).value();
    auto c = decode->connect("127.0.0.1", prefill->port());
    REQUIRE_MESSAGE(c, c.error().message);
    peer = c.value();
  }
  // Starts one transfer of `bytes` from src[src_off] to dst[dst_off]: the send, the receive.
  struct started {
    transfer_handle send, recv;
  };
  started start(const std::string& id, std::size_t src_off, std::size_t dst_off,
                std::size_t bytes, const transfer_options& send_opts = {}) {
    return {prefill->send(id, {{src_region, src_off, bytes}}, send_opts),
            decode->receive(id, peer, {{dst_region, dst_off, bytes}})};
  }

  // One transfer as start() does; checks that it succeeded and that the bytes arrived.
  void transfer_ok(const std::string& id, std::size_t src_off, std::size_t dst_off,
                   std::size_t bytes, const transfer_options& send_opts = {}) {
    auto [s, r] = start(id, src_off, dst_off, bytes, send_opts);
    auto rr = r.wait_for(patience);
    REQUIRE(rr);
    CHECK_MESSAGE(rr->status == transfer_status::succeeded, rr->message);
    CHECK(std::memcmp(&dst[dst_off], &src[src_off], bytes) == 0);
    REQUIRE(s.wait_for(patience));
  }

  // The prefill goes first: its transport connects to the decode's UCX worker on its first put,
  // and a connection refused because that worker is already gone can trip an assertion in UCX
  // 1.13's tcp transport (tcp_ep.c: "!(ep->flags & UCT_TCP_EP_FLAG_CTX_TYPE_TX)") in a test
  // that ends within milliseconds of its first put.
  ~node_pair() {
    prefill->stop(2s);
    decode->stop(2s);
  }
};

// All events of `n` for request `id`, waiting for events until `count` arrived (or patience
// ran out).
inline std::vector<transfer_event> events_for(node& n, const std::string& id, std::size_t count,
                                       std::map<std::string, std::vector<transfer_event>>& seen) {
  auto until = steady::now() + patience;
  while (seen[id].size() < count && steady::now() < until) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
    for (auto& ev : n.wait_events(std::max(left, 0ms)))
      seen[ev.request_id].push_back(ev);
  }
  return seen[id];
}

// Waits for `pred` on `n`'s health, woken by its changes.
// A fault plan of one rule, for node_pair's prefill transport.
inline std::shared_ptr<transport::fault_plan> plan_with(transport::fault_rule rule) {
  auto plan = std::make_shared<transport::fault_plan>();
  plan->add(rule);
  return plan;
}

inline transport::fault_rule first_put(transport::fault_action action) {
  transport::fault_rule r;
  r.op = "put";
  r.nth = 1;
  r.action = action;
  return r;
}

inline bool health_until(const node& n, const std::function<bool(const health_snapshot&)>& pred,
                         std::chrono::milliseconds limit = patience) {
  return n.wait_health(pred, limit);
}

inline std::size_t count_kind(const std::vector<transfer_event>& evs, event_kind k) {
  return static_cast<std::size_t>(
    std::count_if(evs.begin(), evs.end(), [k](auto& e) { return e.kind == k; }));
}



}  // namespace kvferry::test
