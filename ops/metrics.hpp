// What a node shows an operator on /metrics (Prometheus text format 0.0.4): the counters of
// health, and per side (send, receive) the outcomes and two latency histograms. The histogram is
// written from any thread without a lock (an atomic add per bucket, count and sum) and read as
// a snapshot. Bucket bounds are those a KV transfer is read by: 50 µs .. 60 s, then +Inf.
// No CAF, no network here (ops/http_endpoint serves the text).
#pragma once

#include "kvferry/health.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace kvferry::ops {

// Upper bounds of the buckets in microseconds (le=), ascending; +Inf is implicit.
inline constexpr std::array<std::uint64_t, 18> latency_bounds_us{
  50,     100,    250,     500,     1000,    2500,     5000,     10000,    25000,
  50000,  100000, 250000,  500000,  1000000, 2500000,  5000000,  10000000, 60000000};

struct latency_counts {
  std::array<std::uint64_t, latency_bounds_us.size() + 1> buckets{};  // not cumulative; last: +Inf
  std::uint64_t count = 0;
  std::uint64_t sum_us = 0;
};

class latency_histogram {
 public:
  void record(std::uint64_t us) noexcept {
    std::size_t i = 0;
    while (i < latency_bounds_us.size() && us > latency_bounds_us[i])
      ++i;
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(us, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
  }
  // Each field is read once; a record() running meanwhile may be half seen (Prometheus
  // tolerates that: counts only grow).
  latency_counts snapshot() const noexcept {
    latency_counts c;
    for (std::size_t i = 0; i < buckets_.size(); ++i)
      c.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
    c.count = count_.load(std::memory_order_relaxed);
    c.sum_us = sum_us_.load(std::memory_order_relaxed);
    return c;
  }

 private:
  std::array<std::atomic<std::uint64_t>, latency_bounds_us.size() + 1> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_us_{0};
};

// Per side: outcomes, how long requests waited before their data moved (queue) and then moved
// (transfer). Requests that ended without moving count in the outcomes only.
struct side_metrics {
  std::uint64_t succeeded = 0, failed = 0, cancelled = 0;
  latency_counts queue, transfer;
};

struct metrics_input {
  std::string node_name;
  std::uint64_t epoch = 0;
  health_snapshot health;
  side_metrics send, receive;
  std::uint64_t peers = 0;  // peers this node is connected to (connect() minus disconnect())
};

// The exposition text: every metric with # HELP and # TYPE, names prefixed kvferry_.
std::string prometheus_text(const metrics_input& in);

// A label value as the text format wants it: backslash, double quote and newline escaped.
std::string escape_label(const std::string& v);

}  // namespace kvferry::ops
