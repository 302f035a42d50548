// /metrics and /healthz of a running node (node_config::metrics_listen), read over HTTP while two
// nodes transfer over real UCX and CAF networking.
#include "node_pair.hpp"
#include "tests/support/http_client.hpp"

using namespace kvferry;
using namespace kvferry::test;
using namespace std::chrono_literals;

namespace {

node_config with_metrics() {
  node_config cfg;
  cfg.metrics_listen = "127.0.0.1:0";
  cfg.default_deadline_ms = 0;
  cfg.progress_deadline_ms = 200;
  return cfg;
}

double value(const std::string& text, const std::string& metric) {
  auto v = metric_value(text, metric);
  REQUIRE_MESSAGE(v, (metric + " missing from:\n" + text));
  return *v;
}

}  // namespace

TEST_CASE("/metrics counts a node's transfers by side and outcome, their bytes and their "
          "latencies, as the node's own metrics() does") {
  node_pair np{8 * 4096, with_metrics()};
  auto port = np.decode->metrics_port();
  REQUIRE(port != 0);
  REQUIRE(np.prefill->metrics_port() != 0);
  CHECK(np.prefill->metrics_port() != port);

  auto before = http_get(port, "/metrics");
  REQUIRE(before.status == 200);
  CHECK(before.headers.find("text/plain; version=0.0.4") != std::string::npos);
  CHECK(value(before.body, "kvferry_transfers_total{side=\"receive\",outcome=\"succeeded\"}") ==
        0);
  CHECK(value(before.body, "kvferry_peers") == 1);  // the decode connected to the prefill

  np.transfer_ok("a", 0, 4096, 4096);
  np.transfer_ok("b", 4096, 0, 2 * 4096);
  np.transfer_ok("c", 0, 0, 4096);
  // A receive whose send never comes, cancelled: the decode counts it cancelled, without
  // latencies if the cancel came before its fetch went out (its data never moved). Which comes
  // first is a race between the actors that the test does not control; the cancel's answer
  // says which it was, and a receive whose fetch went out started moving (transfer_timing) and
  // counts its latencies like any other.
  auto waiting = np.decode->receive("never-sent", np.peer, {{np.dst_region, 0, 4096}});
  auto how = np.decode->cancel("never-sent");
  CAPTURE(to_string(how));
  REQUIRE((how == cancel_result::cancelled_before_advertise ||
           how == cancel_result::cancel_requested_in_flight));
  const double latencies = how == cancel_result::cancelled_before_advertise ? 3 : 4;
  auto cancelled = waiting.wait_for(patience);
  REQUIRE(cancelled);
  CHECK(cancelled->status == transfer_status::cancelled);
  auto after = http_get(port, "/metrics");
  REQUIRE(after.status == 200);
  CHECK(value(after.body, "kvferry_transfers_total{side=\"receive\",outcome=\"succeeded\"}") ==
        3);
  CHECK(value(after.body, "kvferry_transfers_total{side=\"receive\",outcome=\"cancelled\"}") ==
        1);
  CHECK(value(after.body, "kvferry_bytes_total{direction=\"received\"}") == 4 * 4096);
  CHECK(value(after.body, "kvferry_transfer_seconds_count{side=\"receive\"}") == latencies);
  CHECK(value(after.body, "kvferry_transfer_seconds_bucket{side=\"receive\",le=\"+Inf\"}") ==
        latencies);
  CHECK(value(after.body, "kvferry_transfer_seconds_sum{side=\"receive\"}") > 0);
  CHECK(value(after.body, "kvferry_queue_wait_seconds_count{side=\"receive\"}") == latencies);
  CHECK(value(after.body, "kvferry_transfers_in_flight") == 0);
  CHECK(value(after.body, "kvferry_healthy") == 1);

  // The prefill's side of the same transfers, from its own endpoint.
  REQUIRE(np.prefill->wait_health([](auto& h) { return h.succeeded == 3; }, patience));
  auto sent = http_get(np.prefill->metrics_port(), "/metrics");
  CHECK(value(sent.body, "kvferry_transfers_total{side=\"send\",outcome=\"succeeded\"}") == 3);
  CHECK(value(sent.body, "kvferry_bytes_total{direction=\"sent\"}") == 4 * 4096);
  CHECK(value(sent.body, "kvferry_transfers_total{side=\"receive\",outcome=\"succeeded\"}") == 0);

  // The same text through the API, for an engine that exports its own metrics.
  auto api = np.decode->metrics();
  CHECK(value(api, "kvferry_transfers_total{side=\"receive\",outcome=\"succeeded\"}") == 3);
  CHECK(http_get(port, "/other").status == 404);
}

TEST_CASE("/healthz answers 503 naming the reason while the node is unhealthy, and 200 once it "
          "heals") {
  auto plan = plan_with(first_put(transport::fault_action::hold));
  node_pair np{4 * 4096, with_metrics(), plan};
  auto port = np.prefill->metrics_port();
  auto ok = http_get(port, "/healthz");
  CHECK(ok.status == 200);
  CHECK(ok.body == "ok\n");

  // A put held in the prefill's transport: a transfer that stops moving (F14).
  auto [s, r] = np.start("stuck", 0, 0, 4096);
  REQUIRE(plan->wait_held(1, patience));
  REQUIRE(health_until(*np.prefill, [](auto& h) { return !h.healthy; }, 10s));
  auto sick = http_get(port, "/healthz");
  CHECK(sick.status == 503);
  CHECK(sick.body.find("progress_deadline_ms") != std::string::npos);
  CHECK(value(http_get(port, "/metrics").body, "kvferry_healthy") == 0);
  CHECK(value(http_get(port, "/metrics").body, "kvferry_stalled") == 1);
  // The decode waits for its sender: healthy.
  CHECK(http_get(np.decode->metrics_port(), "/healthz").status == 200);

  plan->release_held();
  REQUIRE(s.wait_for(patience));
  REQUIRE(r.wait_for(patience));
  REQUIRE(health_until(*np.prefill, [](auto& h) { return h.healthy; }, 10s));
  CHECK(http_get(port, "/healthz").status == 200);
}

TEST_CASE("a node whose metrics_listen cannot be bound does not start, and says which address") {
  node_config a;
  a.metrics_listen = "127.0.0.1:0";
  auto first = node::start(a);
  REQUIRE_MESSAGE(first, first.error().message);
  node_config b;
  b.metrics_listen = "127.0.0.1:" + std::to_string(first.value()->metrics_port());
  auto second = node::start(b);
  REQUIRE(!second);
  CHECK(second.error().code == errc::transport_error);
  CHECK(second.error().message.find(b.metrics_listen) != std::string::npos);
  // Off by default: no port, and metrics() still answers.
  auto plain = node::start(node_config{});
  REQUIRE(plain);
  CHECK(plain.value()->metrics_port() == 0);
  CHECK(plain.value()->metrics().find("kvferry_healthy 1") != std::string::npos);
  // Stopping a node closes its endpoint.
  auto port = first.value()->metrics_port();
  first.value()->stop();
  raw_connection after{port};
  CHECK(!after.connected());
}
