// The Prometheus text of a node's counters (ops/metrics): what an operator's scraper parses.

#include "ops/metrics.hpp"
#include "tests/support/http_client.hpp"

#include <doctest/doctest.h>

#include <set>
#include <sstream>

namespace kvferry::ops {

using test::metric_value;

TEST_CASE("a latency histogram puts each duration in the first bucket whose bound holds it") {
  latency_histogram h;
  h.record(0);                           // first bucket (le 50 µs)
  h.record(50);                          // still the first: bounds are inclusive
  h.record(51);                          // second (le 100 µs)
  h.record(latency_bounds_us.back());    // last finite bucket
  h.record(latency_bounds_us.back() + 1);  // +Inf
  auto c = h.snapshot();
  CHECK(c.buckets[0] == 2);
  CHECK(c.buckets[1] == 1);
  CHECK(c.buckets[latency_bounds_us.size() - 1] == 1);
  CHECK(c.buckets[latency_bounds_us.size()] == 1);
  CHECK(c.count == 5);
  CHECK(c.sum_us == 0 + 50 + 51 + 2 * latency_bounds_us.back() + 1);
}

TEST_CASE("the metrics text carries the node's counters, outcomes per side and cumulative "
          "histograms, each family declared once") {
  metrics_input in;
  in.node_name = "decode \"7\"\n\\x";
  in.epoch = 0xabc;
  in.health.healthy = false;
  in.health.in_flight = 3;
  in.health.unreleased = 2;
  in.health.poisoned = 1;
  in.health.bytes_sent = 1000;
  in.health.bytes_received = 2000;
  in.health.worker_replacements = 4;
  in.send.succeeded = 5;
  in.send.failed = 6;
  in.receive.cancelled = 7;
  in.peers = 9;
  latency_histogram q;
  q.record(10);
  q.record(700);
  q.record(100000000);  // beyond the last bound
  in.receive.queue = q.snapshot();

  auto text = prometheus_text(in);
  CHECK(metric_value(text, "kvferry_healthy") == 0);
  CHECK(metric_value(text, "kvferry_transfers_in_flight") == 3);
  CHECK(metric_value(text, "kvferry_transfers_unreleased") == 2);
  CHECK(metric_value(text, "kvferry_staging_slots_poisoned") == 1);
  CHECK(metric_value(text, "kvferry_bytes_total{direction=\"sent\"}") == 1000);
  CHECK(metric_value(text, "kvferry_bytes_total{direction=\"received\"}") == 2000);
  CHECK(metric_value(text, "kvferry_worker_replacements_total") == 4);
  CHECK(metric_value(text, "kvferry_peers") == 9);
  CHECK(metric_value(text, "kvferry_transfers_total{side=\"send\",outcome=\"succeeded\"}") == 5);
  CHECK(metric_value(text, "kvferry_transfers_total{side=\"send\",outcome=\"failed\"}") == 6);
  CHECK(metric_value(text, "kvferry_transfers_total{side=\"receive\",outcome=\"cancelled\"}") ==
        7);
  CHECK(metric_value(text, "kvferry_transfers_total{side=\"receive\",outcome=\"succeeded\"}") ==
        0);
  // Cumulative buckets: 10 µs in le=5e-05; 700 µs joins at le=0.001; 100 s only at +Inf.
  CHECK(metric_value(text, "kvferry_queue_wait_seconds_bucket{side=\"receive\",le=\"5e-05\"}") ==
        1);
  CHECK(metric_value(text, "kvferry_queue_wait_seconds_bucket{side=\"receive\",le=\"0.0005\"}") ==
        1);
  CHECK(metric_value(text, "kvferry_queue_wait_seconds_bucket{side=\"receive\",le=\"0.001\"}") ==
        2);
  CHECK(metric_value(text, "kvferry_queue_wait_seconds_bucket{side=\"receive\",le=\"60\"}") == 2);
  CHECK(metric_value(text, "kvferry_queue_wait_seconds_bucket{side=\"receive\",le=\"+Inf\"}") ==
        3);
  CHECK(metric_value(text, "kvferry_queue_wait_seconds_count{side=\"receive\"}") == 3);
  CHECK(metric_value(text, "kvferry_queue_wait_seconds_sum{side=\"receive\"}") ==
        doctest::Approx(100.00071));
  CHECK(metric_value(text, "kvferry_transfer_seconds_count{side=\"send\"}") == 0);
  // The name is a label value: escaped, so the line stays one line.
  CHECK(text.find("kvferry_node_info{node=\"decode \\\"7\\\"\\n\\\\x\",epoch=\"0xabc\"} 1\n") !=
        std::string::npos);

  // Every sample's family is declared (HELP and TYPE) once, before its first sample.
  std::set<std::string> declared, typed;
  std::istringstream lines{text};
  std::string line;
  while (std::getline(lines, line)) {
    REQUIRE(!line.empty());
    if (line.rfind("# HELP ", 0) == 0) {
      auto name = line.substr(7, line.find(' ', 7) - 7);
      CHECK_MESSAGE(declared.insert(name).second, name);
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      auto name = line.substr(7, line.find(' ', 7) - 7);
      CHECK_MESSAGE(typed.insert(name).second, name);
      continue;
    }
    auto name = line.substr(0, line.find_first_of("{ "));
    for (auto suffix : {"_bucket", "_sum", "_count"}) {
      std::string s = suffix;
      if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
          declared.count(name.substr(0, name.size() - s.size())) > 0)
        name = name.substr(0, name.size() - s.size());
    }
    CHECK_MESSAGE(declared.count(name) == 1, line);
    CHECK_MESSAGE(typed.count(name) == 1, line);
  }
}

}  // namespace kvferry::ops
