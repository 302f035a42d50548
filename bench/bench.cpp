#include "bench/bench.hpp"

#include "kvferry/node.hpp"
#include "bench/limits.hpp"
#include "cli/child_process.hpp"
#include "cli/protocol.hpp"
#include "cli/workload.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <malloc.h>
#include <thread>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>

namespace kvferry::bench {

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct case_spec {
  std::string kind;  // "bandwidth", "small-blocks", "rate", "warm-up"
  cli::workload load;
  std::uint32_t concurrency = 1;
};

struct case_result {
  case_spec spec;
  std::uint64_t succeeded = 0, failed = 0, bytes = 0, verified_bytes = 0;
  double seconds = 0, gbps = 0, p50_ms = 0, p99_ms = 0, per_second = 0;
  std::optional<double> limit_gbps, memcpy_gbps, tag_lat_us;
};

struct memory_result {
  std::uint32_t requests = 0;
  std::uint64_t send_bytes = 0, recv_bytes = 0;          // heap per in-flight request
  bool heap_known = true;  // false under a sanitizer's allocator, which malloc statistics miss
  std::uint64_t send_rss_bytes = 0, recv_rss_bytes = 0;  // resident set per in-flight request
  std::int64_t send_retained = 0, recv_retained = 0;  // heap still held per request once all ended
  bool all_resolved = true;
};

double percentile(std::vector<double> v, double q) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(q * (v.size() - 1) + 0.5))];
}

// The decode side of one case: receives with `concurrency` requests in flight.
case_result run_case(node& n, peer_id peer, cli::child_process& prefill,
                     std::vector<cli::pool_memory>& pools, const options& opts,
                     const case_spec& spec) {
  case_result res;
  res.spec = spec;
  const auto& w = spec.load;
  if (pools.empty() || pools.back().bytes < w.pool_bytes()) {
    auto p = cli::make_pool(n, opts.pool, w.pool_bytes());
    if (!p) {
      std::cerr << "kvferry bench: decode pool: " << p.error().message << "\n";
      res.failed = w.requests;
      return res;
    }
    pools.push_back(std::move(p.value()));
  }
  auto& pool = pools.back();
  prefill.send_message(cli::protocol::offer{w.requests, w.layers, w.block_bytes, w.seed});
  auto offered = prefill.wait_for_message<cli::protocol::offered>(300s);
  if (!offered || !offered->accepted()) {
    std::cerr << "kvferry bench: the prefill node did not offer the case: "
              << (offered ? offered->error : offered.error) << "\n";
    res.failed = w.requests;
    return res;
  }
  std::mutex mtx;
  std::condition_variable cv;
  std::uint64_t done = 0;
  std::vector<steady::time_point> started(w.requests);
  std::vector<double> latency(w.requests, 0);
  std::vector<transfer_handle> handles;
  handles.reserve(w.requests);
  auto t0 = steady::now();
  for (std::uint32_t i = 0; i < w.requests; ++i) {
    {
      std::unique_lock<std::mutex> guard{mtx};
      cv.wait(guard, [&] { return i - done < spec.concurrency; });
    }
    started[i] = steady::now();
    handles.push_back(n.receive(w.request_id(i), peer, w.destination_spans(pool.region, i)));
    handles.back().on_done([&, i](const transfer_result&) {
      latency[i] = std::chrono::duration<double, std::milli>(steady::now() - started[i]).count();
      std::lock_guard<std::mutex> guard{mtx};
      ++done;
      cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait_for(guard, 600s, [&] { return done == w.requests; });
  }
  res.seconds = std::chrono::duration<double>(steady::now() - t0).count();
  std::vector<double> ok_latency;
  for (std::uint32_t i = 0; i < w.requests; ++i) {
    auto r = handles[i].wait_for(1s);  // all resolved above; this also orders the callbacks
    if (r && r->status == transfer_status::succeeded) {
      ++res.succeeded;
      res.bytes += r->bytes;
      ok_latency.push_back(latency[i]);
      if (opts.verify)
        res.verified_bytes += w.verify_destination(pool.base, i);
    } else {
      ++res.failed;
    }
  }
  res.gbps = static_cast<double>(res.bytes) / res.seconds / 1e9;
  res.per_second = static_cast<double>(res.succeeded) / res.seconds;
  res.p50_ms = percentile(ok_latency, 0.50);
  res.p99_ms = percentile(ok_latency, 0.99);
  return res;
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

// Node memory per in-flight request: `count` sends no peer fetches, then `count` receives whose
// sends the prefill never offers, each held in flight while the heap is measured, then
// cancelled. The figure includes everything the process allocated for them: request actors,
// handles, registry entries, queued admissions, CAF mailboxes.
memory_result measure_memory(node& n, peer_id peer, const cli::pool_memory& pool,
                             std::uint32_t count) {
  memory_result m;
  m.requests = count;
  auto hold = [&](bool sends, std::uint64_t& per_request, std::uint64_t& rss_per_request,
                  std::int64_t& retained) {
    const std::string prefix = sends ? "mem-send-" : "mem-recv-";
    n.poll();  // events of earlier cases are not part of the figure
    const auto heap0 = heap_in_use();
    const auto rss0 = rss_bytes();
    std::vector<transfer_handle> handles;
    handles.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
      std::vector<block_span> blocks{{pool.region, (i % 256) * 4096ull, 4096}};
      handles.push_back(sends ? n.send(prefix + std::to_string(i), blocks)
                              : n.receive(prefix + std::to_string(i), peer, blocks));
    }
    n.wait_health([&](const health_snapshot& h) { return h.in_flight >= count; }, 60s);
    std::this_thread::sleep_for(500ms);  // let every request actor reach its waiting state
    const auto heap1 = heap_in_use();
    const auto rss1 = rss_bytes();
    per_request = heap1 > heap0 ? (heap1 - heap0) / count : 0;
    rss_per_request = rss1 > rss0 ? (rss1 - rss0) / count : 0;
    for (std::uint32_t i = 0; i < count; ++i)
      n.cancel(prefix + std::to_string(i));
    for (auto& h : handles)
      m.all_resolved &= h.wait_for(30s).has_value() && h.wait_released(30s);
    handles.clear();
    std::this_thread::sleep_for(500ms);  // let every request actor finish and be freed
    n.poll();
    retained = (static_cast<std::int64_t>(heap_in_use()) - static_cast<std::int64_t>(heap0)) /
               static_cast<std::int64_t>(count);
  };
  m.heap_known = heap_in_use() > 0;
  hold(true, m.send_bytes, m.send_rss_bytes, m.send_retained);
  hold(false, m.recv_bytes, m.recv_rss_bytes, m.recv_retained);
  return m;
}

std::vector<case_spec> plan(const options& opts) {
  std::vector<case_spec> out;
  std::uint64_t seed = 1000;
  auto add = [&](std::string kind, std::uint32_t requests, std::uint32_t layers,
                 std::uint64_t block, std::uint32_t conc) {
    case_spec c;
    c.kind = std::move(kind);
    c.load.requests = requests;
    c.load.layers = layers;
    c.load.block_bytes = block;
    c.load.seed = ++seed;
    c.concurrency = conc;
    out.push_back(c);
  };
  add("warm-up", 16, 4, 64 << 10, 4);
  for (auto bs : opts.block_sizes) {
    for (auto conc : opts.concurrency) {
      auto per_request = bs * opts.blocks_per_request;
      auto requests = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(
        opts.bytes_per_case / per_request, std::max<std::uint64_t>(4, 2 * conc), 20000));
      // An untimed pass first (unless --cold): the pages of a long-lived KV pool are faulted
      // in and the peer's segment is mapped long before the traffic that matters, and a fresh
      // 2 GiB pool costs more in first-touch page faults than in copies.
      if (!opts.cold)
        add("warm-up", requests, opts.blocks_per_request, bs, conc);
      add("bandwidth", requests, opts.blocks_per_request, bs, conc);
    }
  }
  if (!opts.cold)
    add("warm-up", 16, opts.small_blocks, opts.small_block_bytes, 4);
  add("small-blocks", 16, opts.small_blocks, opts.small_block_bytes, 4);
  add("rate", opts.rate_requests, 1, 64, 64);
  return out;
}

std::string human_bytes(std::uint64_t b) {
  if (b >= (1u << 20) && b % (1u << 20) == 0)
    return std::to_string(b >> 20) + " MiB";
  if (b >= 1024 && b % 1024 == 0)
    return std::to_string(b >> 10) + " KiB";
  return std::to_string(b) + " B";
}

std::string opt(const std::optional<double>& v, int precision = 2) {
  if (!v)
    return "-";
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(precision);
  out << *v;
  return out.str();
}

void print_table(const options& opts, const std::vector<case_result>& results,
                 const std::optional<memory_result>& mem) {
  std::printf("kvferry bench, UCX transport %s, KV pools %s%s\n", opts.transport.c_str(),
              opts.pool.c_str(), opts.verify ? ", every byte verified" : "");
  std::printf("%-13s %-20s %5s %6s %9s %9s %9s %12s %6s %11s\n", "case", "request", "conc",
              "reqs", "GB/s", "p50 ms", "p99 ms", "ucx put GB/s", "ratio", "memcpy GB/s");
  for (auto& r : results) {
    auto shape = std::to_string(r.spec.load.layers) + " x " + human_bytes(r.spec.load.block_bytes);
    std::string ratio = r.limit_gbps && *r.limit_gbps > 0 ? opt(r.gbps / *r.limit_gbps) : "-";
    std::printf("%-13s %-20s %5u %6u %9.2f %9.3f %9.3f %12s %6s %11s\n", r.spec.kind.c_str(),
                shape.c_str(), r.spec.concurrency, r.spec.load.requests, r.gbps, r.p50_ms,
                r.p99_ms, opt(r.limit_gbps).c_str(), ratio.c_str(), opt(r.memcpy_gbps).c_str());
    if (r.spec.kind == "rate")
      std::printf("%-13s %.0f transfers/s through the whole control path (ucx tag_lat %s us)\n",
                  "", r.per_second, opt(r.tag_lat_us).c_str());
    if (r.failed > 0)
      std::printf("%-13s %llu transfers FAILED\n", "", static_cast<unsigned long long>(r.failed));
  }
  if (mem)
    std::printf("memory        %u in flight: %llu B heap (%llu B resident) per send waiting for "
                "its fetch, %llu B heap (%llu B resident) per receive%s\n",
                mem->requests, static_cast<unsigned long long>(mem->send_bytes),
                static_cast<unsigned long long>(mem->send_rss_bytes),
                static_cast<unsigned long long>(mem->recv_bytes),
                static_cast<unsigned long long>(mem->recv_rss_bytes),
                mem->all_resolved ? "" : " (SOME NEVER RESOLVED)");
  if (mem)
    std::printf("%-13s still held once they all ended: %lld B per send, %lld B per receive\n", "",
                static_cast<long long>(mem->send_retained),
                static_cast<long long>(mem->recv_retained));
}

void print_json(const options& opts, const std::vector<case_result>& results,
                const std::optional<memory_result>& mem) {
  using json = nlohmann::ordered_json;  // ordered: fields print in the order they have always had
  // A figure that was not measured is null.
  auto maybe = [](const auto& v) { return v ? json(*v) : json(nullptr); };
  json out;
  out["transport"] = opts.transport;
  out["pool"] = opts.pool;
  out["verify"] = opts.verify;
  out["cases"] = json::array();
  for (auto& r : results) {
    json c;
    c["kind"] = r.spec.kind;
    c["blocks_per_request"] = r.spec.load.layers;
    c["block_bytes"] = r.spec.load.block_bytes;
    c["concurrency"] = r.spec.concurrency;
    c["requests"] = r.spec.load.requests;
    c["succeeded"] = r.succeeded;
    c["failed"] = r.failed;
    c["bytes"] = r.bytes;
    c["verified_bytes"] = r.verified_bytes;
    c["seconds"] = r.seconds;
    c["gb_per_s"] = r.gbps;
    c["transfers_per_s"] = r.per_second;
    c["p50_ms"] = r.p50_ms;
    c["p99_ms"] = r.p99_ms;
    c["ucx_put_gb_per_s"] = maybe(r.limit_gbps);
    c["memcpy_gb_per_s"] = maybe(r.memcpy_gbps);
    c["ucx_tag_lat_us"] = maybe(r.tag_lat_us);
    out["cases"].push_back(std::move(c));
  }
  if (mem) {
    // Heap figures are unknown under a sanitizer's allocator (memory_result::heap_known).
    auto heap = [&](auto v) { return mem->heap_known ? json(v) : json(nullptr); };
    json m;
    m["in_flight"] = mem->requests;
    m["send_heap_bytes_per_request"] = heap(mem->send_bytes);
    m["send_rss_bytes_per_request"] = mem->send_rss_bytes;
    m["recv_heap_bytes_per_request"] = heap(mem->recv_bytes);
    m["recv_rss_bytes_per_request"] = mem->recv_rss_bytes;
    m["send_retained_bytes_per_request"] = heap(mem->send_retained);
    m["recv_retained_bytes_per_request"] = heap(mem->recv_retained);
    m["all_resolved"] = mem->all_resolved;
    out["memory"] = std::move(m);
  }
  std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
}

// GB/s against block size for the bandwidth cases (best concurrency), beside the limits.
void write_plot(const options& opts, const std::vector<case_result>& results) {
  std::map<std::uint64_t, case_result> best;
  for (auto& r : results)
    if (r.spec.kind == "bandwidth" &&
        (best.count(r.spec.load.block_bytes) == 0 || best[r.spec.load.block_bytes].gbps < r.gbps))
      best[r.spec.load.block_bytes] = r;
  auto data = opts.plot + ".dat";
  std::ofstream out{data};
  for (auto& [bs, r] : best)
    out << bs << " " << r.gbps << " " << r.limit_gbps.value_or(0) << " "
        << r.memcpy_gbps.value_or(0) << "\n";
  out.close();
  auto script = opts.plot + ".gp";
  std::ofstream gp{script};
  gp << "set terminal png size 900,540\nset output '" << opts.plot << "'\n"
     << "set logscale x 2\nset logscale y 10\nset format x '%.0b%BB'\n"
     << "set xlabel 'block size'\nset ylabel 'GB/s (log)'\n"
     << "set title 'kvferry over UCX " << opts.transport << " vs the machine (same run)'\n"
     << "set key right bottom\nset grid\n"
     << "plot '" << data << "' using 1:2 with linespoints title 'kvferry', '" << data
     << "' using 1:3 with linespoints title 'ucx\\_perftest ucp\\_put\\_bw', '" << data
     << "' using 1:4 with linespoints title 'memcpy (1 thread)'\n";
  gp.close();
  if (std::system(("gnuplot '" + script + "'").c_str()) != 0)
    std::cerr << "kvferry bench: gnuplot failed or is missing (apt-get install gnuplot-nox); "
                 "data in " << data << "\n";
}

}  // namespace

int run(const options& opts) {
  node_config cfg;
  cfg.transport = opts.transport;
  cfg.role = "decode";
  cfg.default_deadline_ms = 0;  // a benchmark case may legitimately take long
  cfg.progress_deadline_ms = 600000;
  cli::child_process prefill{{cli::self_executable(), "node", "--role", "prefill", "--listen",
                              "127.0.0.1:0", "--transport", opts.transport, "--requests", "1",
                              "--layers", "1", "--block-bytes", "4096", "--pool", opts.pool,
                              "--set", "default_deadline_ms=0"}};
  auto ready = prefill.wait_for_message<cli::protocol::ready>(60s);
  if (!ready) {
    std::cerr << "kvferry bench: the prefill node did not start: " << ready.error << "\n";
    return 1;
  }
  auto port = ready->port;
  auto started = node::start(cfg);
  if (!started) {
    std::cerr << "kvferry bench: " << started.error().message << "\n";
    return 1;
  }
  auto& n = *started.value();
  auto peer = n.connect("127.0.0.1", port);
  if (!peer) {
    std::cerr << "kvferry bench: " << peer.error().message << "\n";
    return 1;
  }
  std::vector<cli::pool_memory> pools;
  std::vector<case_result> results;
  bool ok = true;
  for (auto& spec : plan(opts)) {
    auto r = run_case(n, peer.value(), prefill, pools, opts, spec);
    ok &= r.failed == 0 && (!opts.verify || r.verified_bytes == spec.load.pool_bytes());
    if (spec.kind != "warm-up")
      results.push_back(std::move(r));
  }
  std::optional<memory_result> mem;
  if (opts.memory_requests > 0 && !pools.empty()) {
    mem = measure_memory(n, peer.value(), pools.front(), opts.memory_requests);
    ok &= mem->all_resolved;
  }
  prefill.close_stdin();
  n.stop(2000ms);
  prefill.wait(10s);
  if (opts.limits) {
    std::map<std::uint64_t, std::optional<double>> put_cache;
    for (auto& r : results) {
      auto bs = r.spec.load.block_bytes;
      if (r.spec.kind == "rate") {
        r.tag_lat_us = perftest_tag_lat_us(opts.transport, bs);
        continue;
      }
      if (put_cache.count(bs) == 0)
        put_cache[bs] = perftest_put_gbps(opts.transport, bs);
      r.limit_gbps = put_cache[bs];
      r.memcpy_gbps = memcpy_gbps(bs);
    }
  }
  if (opts.json)
    print_json(opts, results, mem);
  else
    print_table(opts, results, mem);
  if (!opts.plot.empty())
    write_plot(opts, results);
  return ok ? 0 : 1;
}

}  // namespace kvferry::bench
