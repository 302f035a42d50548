#include "bench/hold.hpp"

#include "kvferry/node.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <fstream>
#include <malloc.h>
#include <string>
#include <thread>
#include <vector>

namespace kvferry::bench {

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Bound on each wait of a hold: generous, since 300,000 requests on a busy machine are slow;
// a wait that runs out marks the size unresolved instead of hanging the bench.
constexpr auto hold_patience = 600s;

double seconds_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

// CPU seconds this process has used, all threads together.
double process_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Heap bytes in use (malloc arenas and mmapped chunks): what new requests cost.
std::uint64_t heap_in_use() {
  auto mi = mallinfo2();
  return static_cast<std::uint64_t>(mi.uordblks) + static_cast<std::uint64_t>(mi.hblkhd);
}

std::uint64_t rss_bytes() {
  std::ifstream status{"/proc/self/status"};
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// Waits until the heap stops changing (the actors reached their waiting states, or finished
// and were freed): two samples 100 ms apart within 0.5 %, at most ~10 s. A heap the bench
// cannot read (a sanitizer's allocator) is waited on once.
void settle() {
  auto last = heap_in_use();
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(100ms);
    auto now = heap_in_use();
    auto delta = now > last ? now - last : last - now;
    if (delta <= last / 200)
      return;
    last = now;
  }
}

// Samples health() while a hold runs: did the node ever call itself unhealthy?
class health_watch {
 public:
  explicit health_watch(node& n)
      : thread_([this, &n] {
          while (!done_.load()) {
            if (!n.health().healthy)
              flipped_.store(true);
            std::this_thread::sleep_for(20ms);
          }
        }) {}
  ~health_watch() { stop(); }
  bool stop() {
    done_.store(true);
    if (thread_.joinable())
      thread_.join();
    return !flipped_.load();
  }

 private:
  std::atomic<bool> done_{false}, flipped_{false};
  std::thread thread_;
};

hold_side hold(node& n, bool sends, peer_id peer, region_id region, std::uint32_t count,
               std::uint32_t run, unsigned cancel_threads) {
  hold_side side;
  // Ids are fresh for every size and side: a cancelled id may still be remembered as finished.
  const std::string prefix =
    std::string{sends ? "hold-send-" : "hold-recv-"} + std::to_string(run) + "-";
  transfer_options opts;
  opts.deadline_ms = 3600000;  // an engine's requests have deadlines: their timers are held too
  n.poll();  // events of earlier cases are not part of the figures
  settle();
  const auto heap0 = heap_in_use();
  const auto rss0 = rss_bytes();
  const auto in_flight0 = n.health().in_flight;

  const auto cpu0 = process_cpu_s();
  auto t0 = steady::now();
  std::vector<transfer_handle> handles;
  handles.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    std::vector<block_span> blocks{{region, (i % 256) * 4096ull, 4096}};
    auto id = prefix + std::to_string(i);
    handles.push_back(sends ? n.send(id, blocks, opts) : n.receive(id, peer, blocks, opts));
  }
  side.all_resolved &= n.wait_health(
    [&](const health_snapshot& h) { return h.in_flight >= in_flight0 + count; }, hold_patience);
  side.post_s = seconds_since(t0);

  side.cpu_s = process_cpu_s() - cpu0;
  settle();
  const auto heap1 = heap_in_use();
  const auto rss1 = rss_bytes();
  side.heap_bytes = heap1 > heap0 ? (heap1 - heap0) / count : 0;
  side.rss_bytes = rss1 > rss0 ? (rss1 - rss0) / count : 0;

  const auto cpu1 = process_cpu_s();
  auto t1 = steady::now();
  {
    std::vector<std::thread> cancellers;
    for (unsigned t = 0; t < std::max(1u, cancel_threads); ++t)
      cancellers.emplace_back([&, t, step = std::max(1u, cancel_threads)] {
        for (std::uint32_t i = t; i < count; i += step)
          n.cancel(prefix + std::to_string(i));
      });
    for (auto& c : cancellers)
      c.join();
  }
  auto until = t1 + hold_patience;
  for (auto& h : handles)
    side.all_resolved &= h.wait_for(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      until - steady::now()))
                           .has_value();
  side.resolve_s = seconds_since(t1);
  auto t2 = steady::now();
  for (auto& h : handles)
    side.all_resolved &= h.wait_released(
      std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now()));
  side.release_s = seconds_since(t2);
  side.cpu_s += process_cpu_s() - cpu1;

  handles.clear();
  n.poll();
  settle();
  side.retained_bytes =
    (static_cast<std::int64_t>(heap_in_use()) - static_cast<std::int64_t>(heap0)) /
    static_cast<std::int64_t>(count);
  return side;
}

}  // namespace

hold_result measure_hold(node& n, peer_id peer, region_id region, std::uint32_t count,
                         unsigned cancel_threads) {
  static std::atomic<std::uint32_t> runs{0};  // ids stay fresh across calls
  const auto run = runs++;
  hold_result r;
  r.requests = count;
  r.heap_known = heap_in_use() > 0;
  health_watch watch{n};
  r.send = hold(n, true, peer, region, count, run, cancel_threads);
  r.recv = hold(n, false, peer, region, count, run, cancel_threads);
  r.stayed_healthy = watch.stop();
  return r;
}

double hold_slope(const std::vector<hold_result>& results,
                  double (hold_result::*per_request)() const) {
  if (results.size() < 2)
    return 1;
  const hold_result* small = &results.front();
  const hold_result* large = &results.front();
  for (auto& r : results) {
    if (r.requests < small->requests)
      small = &r;
    if (r.requests > large->requests)
      large = &r;
  }
  auto base = (small->*per_request)();
  return base > 0 ? (large->*per_request)() / base : 0;
}

}  // namespace kvferry::bench
