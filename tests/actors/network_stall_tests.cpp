// Health while CAF's network thread (the multiplexer) does not run: every connection's reads and
// writes wait on it, so a node whose actors are fine can still serve nobody. The stall is made
// for real: a job posted to that thread that blocks it.
#include "actors/node_impl.hpp"
#include "kvferry/node.hpp"

#include <caf/io/middleman.hpp>
#include <caf/io/network/multiplexer.hpp>
#include <doctest/doctest.h>

#include <future>
#include <chrono>

using namespace kvferry;
using namespace std::chrono_literals;

TEST_CASE("health turns unhealthy, naming the network thread, while that thread is stalled, and "
          "healthy again after") {
  node_config cfg;
  cfg.transport = "tcp";
  cfg.network_stall_ms = 200;
  auto started = node::start(cfg);
  REQUIRE_MESSAGE(started, started.error().message);
  auto& n = *started.value();
  REQUIRE(n.health().healthy);
  std::promise<void> release;
  node_access::of(n).sys->middleman().backend().post(
    [held = release.get_future().share()] { held.wait(); });
  // Bounds are generous for a loaded machine: the node notices within about 250 ms.
  auto stalled = n.wait_health([](const health_snapshot& h) { return !h.healthy; }, 20s);
  auto h = n.health();
  release.set_value();
  REQUIRE(stalled);
  CHECK(h.network_stalled);
  CHECK_MESSAGE(h.reason.find("network thread") != std::string::npos, h.reason);
  CHECK(n.wait_health([](const health_snapshot& x) { return x.healthy; }, 20s));
  CHECK(n.health().reason.empty());
  n.stop(2s);
}
