#include "bench/bench.hpp"

#include "kvferry/node.hpp"
#include "bench/hold.hpp"
#include "bench/idle.hpp"
#include "bench/limits.hpp"
#include "cli/child_process.hpp"
#include "cli/protocol.hpp"
#include "cli/workload.hpp"
#include "gpu/device_buffer.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <unistd.h>

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
  std::optional<double> nixlbench_gbps;  // the reference figure for a shapes case, if any
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
  prefill.send_message(cli::protocol::offer{w.requests, w.layers, w.block_bytes, w.seed, {}});
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
  if (opts.verify) {
    if (auto e = cli::pull_from_device(pool); e.code != errc::none)
      std::cerr << "kvferry bench: reading the decode pool back: " << e.message << "\n";
  }
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

// The most a shapes case's pool may take on each node (the large shapes at many in flight would
// otherwise ask for 8 GiB a side).
constexpr std::uint64_t shape_pool_cap = 2ull << 30;

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
  // The idle case needs it too: an idle node is one that has done some work.
  if (wants(opts, "bandwidth") || wants(opts, "small-blocks") || wants(opts, "rate") ||
      wants(opts, "idle"))
    add("warm-up", 16, 4, 64 << 10, 4);
  for (auto bs : wants(opts, "bandwidth") ? opts.block_sizes : std::vector<std::uint64_t>{}) {
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
  // nixlbench's table: each shape one request at a time and with many in flight. A case's two
  // pools (one per node) stay below shape_pool_cap, so the large shapes run fewer in flight
  // than asked (the table says how many).
  for (auto s : wants(opts, "shapes") ? opts.shapes : std::vector<shape>{}) {
    const std::uint64_t per_request = s.block_bytes * s.blocks;
    for (auto asked : opts.concurrency) {
      auto fit = std::max<std::uint64_t>(2, shape_pool_cap / per_request);
      auto requests = static_cast<std::uint32_t>(std::min<std::uint64_t>(
        fit, std::clamp<std::uint64_t>(opts.bytes_per_case / per_request,
                                       std::max<std::uint64_t>(4, 2 * asked), 20000)));
      auto conc = std::max<std::uint32_t>(1, std::min(asked, requests / 2));
      if (!opts.cold)
        add("warm-up", requests, s.blocks, s.block_bytes, conc);
      add("shapes", requests, s.blocks, s.block_bytes, conc);
    }
  }
  if (wants(opts, "small-blocks")) {
    if (!opts.cold)
      add("warm-up", 16, opts.small_blocks, opts.small_block_bytes, 4);
    add("small-blocks", 16, opts.small_blocks, opts.small_block_bytes, 4);
  }
  if (wants(opts, "rate"))
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

// With --pool cuda on a CUDA device: what the device's own copies reach, in the same run.
struct device_figures {
  std::string device;  // "cuda:<n>"; empty: not measured
  std::optional<gpu::device_copy_rates> limits;  // absent: measuring failed (error says why)
  std::string error;
};
constexpr std::size_t device_limit_bytes = 64u << 20;

device_figures measure_device(const options& opts) {
  device_figures out;
  const int n = gpu::cuda_device_of(opts.device);
  if (opts.pool != "cuda" || !opts.limits || n < 0)
    return out;
  out.device = "cuda:" + std::to_string(n);
  auto measured = gpu::measure_copy_limits(n, device_limit_bytes);
  if (measured)
    out.limits = measured.value();
  else
    out.error = measured.error().message;
  return out;
}

void print_holds(const std::vector<hold_result>& holds) {
  std::printf("\n%-9s %-5s %9s %10s %10s %9s %9s %10s %8s %9s\n", "hold", "side", "post s",
              "resolve s", "release s", "us/req", "CPU us/req", "heap B/req", "RSS B/req",
              "kept B/req");
  for (auto& h : holds) {
    for (int s = 0; s < 2; ++s) {
      auto& side = s == 0 ? h.send : h.recv;
      auto heap = h.heap_known ? std::to_string(side.heap_bytes) : std::string{"-"};
      auto kept = h.heap_known ? std::to_string(side.retained_bytes) : std::string{"-"};
      std::printf("%-9u %-5s %9.2f %10.2f %10.2f %9.1f %9.1f %10s %8llu %9s%s\n", h.requests,
                  s == 0 ? "send" : "recv", side.post_s, side.resolve_s, side.release_s,
                  side.seconds() * 1e6 / h.requests, side.cpu_s * 1e6 / h.requests, heap.c_str(),
                  static_cast<unsigned long long>(side.rss_bytes), kept.c_str(),
                  side.all_resolved ? "" : "  SOME NEVER RESOLVED");
    }
    if (!h.stayed_healthy)
      std::printf("%-9s the node turned UNHEALTHY during this hold\n", "");
  }
  std::printf("hold slope: %.2f (time per request at the largest size / at the smallest; "
              "in CPU time of this process: %.2f)\n",
              hold_slope(holds), hold_slope(holds, &hold_result::cpu_us_per_request));
}

// The idle case: one line per process, its busiest threads (by name) after it.
void print_idle(const idle_result& idle) {
  std::printf("\n%-9s %-8s %7s %7s %7s %10s  %s\n", "idle", "process", "CPU %", "user s",
              "sys s", "switches/s", "busiest threads: CPU % (switches/s)");
  char window[32];
  std::snprintf(window, sizeof window, "%.1f s", idle.seconds);
  for (auto& p : idle.processes) {
    if (!p.usage) {
      std::printf("%-9s %-8s %7s  its /proc could not be read\n", window, p.role.c_str(), "-");
      continue;
    }
    auto& u = *p.usage;
    std::string busiest;
    for (std::size_t i = 0; i < u.names.size() && i < 3; ++i) {
      char one[128];
      std::snprintf(one, sizeof one, "%s%s x%u %.2f (%.0f)", i == 0 ? "" : ", ",
                    u.names[i].name.c_str(), u.names[i].threads, u.names[i].cpu_percent,
                    u.names[i].switches_per_s);
      busiest += one;
    }
    std::printf("%-9s %-8s %7.2f %7.2f %7.2f %10.0f  %s\n", window, p.role.c_str(),
                u.cpu_percent, u.user_s, u.system_s, u.switches_per_s, busiest.c_str());
  }
  std::printf("%-9s %% of one core, from /proc (in clock ticks: +-%.2f %% over this window), "
              "after %.1f s to settle\n",
              "", idle.resolution_percent, idle.settle_s);
}

void print_table(const options& opts, const std::vector<case_result>& results,
                 const std::vector<hold_result>& holds, const device_figures& dev,
                 const std::optional<idle_result>& idle) {
  std::printf("kvferry bench, UCX transport %s, KV pools %s%s\n", opts.transport.c_str(),
              opts.pool.c_str(), opts.verify ? ", every byte verified" : "");
  if (dev.limits)
    std::printf("device %s, cudaMemcpy of 64 MiB: pinned host->device %.2f GB/s, device->host "
                "%.2f GB/s, device->device %.2f GB/s\n",
                dev.device.c_str(), dev.limits->host_to_device, dev.limits->device_to_host,
                dev.limits->device_to_device);
  else if (!dev.device.empty())
    std::printf("device %s: its copy limits could not be measured: %s\n", dev.device.c_str(),
                dev.error.c_str());
  std::printf("%-13s %-20s %5s %6s %9s %9s %9s %12s %6s %11s %9s\n", "case", "request", "conc",
              "reqs", "GB/s", "p50 ms", "p99 ms", "ucx put GB/s", "ratio", "memcpy GB/s",
              "nixlbench");
  for (auto& r : results) {
    auto shape = std::to_string(r.spec.load.layers) + " x " + human_bytes(r.spec.load.block_bytes);
    std::string ratio = r.limit_gbps && *r.limit_gbps > 0 ? opt(r.gbps / *r.limit_gbps) : "-";
    std::printf("%-13s %-20s %5u %6u %9.2f %9.3f %9.3f %12s %6s %11s %9s\n", r.spec.kind.c_str(),
                shape.c_str(), r.spec.concurrency, r.spec.load.requests, r.gbps, r.p50_ms,
                r.p99_ms, opt(r.limit_gbps).c_str(), ratio.c_str(), opt(r.memcpy_gbps).c_str(),
                opt(r.nixlbench_gbps).c_str());
    if (r.spec.kind == "rate")
      std::printf("%-13s %.0f transfers/s through the whole control path (ucx tag_lat %s us)\n",
                  "", r.per_second, opt(r.tag_lat_us).c_str());
    if (r.failed > 0)
      std::printf("%-13s %llu transfers FAILED\n", "", static_cast<unsigned long long>(r.failed));
  }
  if (std::any_of(results.begin(), results.end(), [](auto& r) { return r.nixlbench_gbps; }))
    std::printf("%-13s nixlbench: its GB/s for that shape, one in flight, on this project's VM "
                "(bench/RESULTS.md), not measured in this run\n", "");
  if (!holds.empty())
    print_holds(holds);
  if (idle)
    print_idle(*idle);
}

void print_json(const options& opts, const std::vector<case_result>& results,
                const std::vector<hold_result>& holds, const device_figures& dev,
                const std::optional<idle_result>& idle) {
  using json = nlohmann::ordered_json;  // ordered: fields print in the order they have always had
  // A figure that was not measured is null.
  auto maybe = [](const auto& v) { return v ? json(*v) : json(nullptr); };
  json out;
  out["transport"] = opts.transport;
  out["pool"] = opts.pool;
  if (!dev.device.empty()) {
    json d;
    d["device"] = dev.device;
    d["bytes"] = device_limit_bytes;
    d["host_to_device_gbps"] = dev.limits ? json(dev.limits->host_to_device) : json(nullptr);
    d["device_to_host_gbps"] = dev.limits ? json(dev.limits->device_to_host) : json(nullptr);
    d["device_to_device_gbps"] = dev.limits ? json(dev.limits->device_to_device) : json(nullptr);
    if (!dev.limits)
      d["error"] = dev.error;
    out["device_limits"] = d;
  }
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
    c["nixlbench_gb_per_s"] = maybe(r.nixlbench_gbps);
    out["cases"].push_back(std::move(c));
  }
  if (!holds.empty()) {
    out["hold"] = json::array();
    for (auto& h : holds) {
      // Heap figures are unknown under a sanitizer's allocator (hold_result::heap_known).
      auto heap = [&](auto v) { return h.heap_known ? json(v) : json(nullptr); };
      auto side = [&](const hold_side& s) {
        json j;
        j["post_s"] = s.post_s;
        j["resolve_s"] = s.resolve_s;
        j["release_s"] = s.release_s;
        j["cpu_s"] = s.cpu_s;
        j["heap_bytes_per_request"] = heap(s.heap_bytes);
        j["rss_bytes_per_request"] = s.rss_bytes;
        j["retained_bytes_per_request"] = heap(s.retained_bytes);
        j["all_resolved"] = s.all_resolved;
        return j;
      };
      json j;
      j["in_flight"] = h.requests;
      j["us_per_request"] = h.us_per_request();
      j["cpu_us_per_request"] = h.cpu_us_per_request();
      j["stayed_healthy"] = h.stayed_healthy;
      j["send"] = side(h.send);
      j["recv"] = side(h.recv);
      out["hold"].push_back(std::move(j));
    }
    out["hold_slope"] = hold_slope(holds);
    out["hold_cpu_slope"] = hold_slope(holds, &hold_result::cpu_us_per_request);
  }
  if (idle) {
    // Per cent of one core; a process whose /proc could not be read has null figures.
    json j;
    j["settle_s"] = idle->settle_s;
    j["seconds"] = idle->seconds;
    j["resolution_percent"] = idle->resolution_percent;
    j["processes"] = json::array();
    for (auto& p : idle->processes) {
      json pj;
      pj["role"] = p.role;
      pj["pid"] = p.pid;
      pj["cpu_percent"] = p.usage ? json(p.usage->cpu_percent) : json(nullptr);
      pj["user_s"] = p.usage ? json(p.usage->user_s) : json(nullptr);
      pj["system_s"] = p.usage ? json(p.usage->system_s) : json(nullptr);
      pj["switches_per_s"] = p.usage ? json(p.usage->switches_per_s) : json(nullptr);
      pj["threads"] = json::array();
      for (auto& t : p.usage ? p.usage->names : std::vector<thread_usage>{}) {
        json tj;
        tj["name"] = t.name;
        tj["count"] = t.threads;
        tj["cpu_percent"] = t.cpu_percent;
        tj["switches_per_s"] = t.switches_per_s;
        pj["threads"].push_back(std::move(tj));
      }
      j["processes"].push_back(std::move(pj));
    }
    out["idle"] = std::move(j);
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

std::optional<shape> parse_shape(const std::string& text) {
  const auto x = text.find('x');
  if (x == std::string::npos || x == 0 || x > 5)
    return std::nullopt;
  auto digits = [](const std::string& t) {
    return !t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const auto count = text.substr(0, x);
  auto size = text.substr(x + 1);
  std::uint64_t unit = 1;
  for (auto [suffix, factor] : {std::pair<const char*, std::uint64_t>{"KiB", 1u << 10},
                                {"MiB", 1u << 20}, {"GiB", 1u << 30}, {"K", 1u << 10},
                                {"M", 1u << 20}, {"G", 1u << 30}}) {
    const std::string sfx{suffix};
    if (size.size() > sfx.size() && size.compare(size.size() - sfx.size(), sfx.size(), sfx) == 0) {
      size.resize(size.size() - sfx.size());
      unit = factor;
      break;
    }
  }
  if (!digits(count) || !digits(size) || size.size() > 10)
    return std::nullopt;
  shape s;
  const auto blocks = std::stoull(count);
  const auto bytes = std::stoull(size) * unit;
  if (blocks < 1 || blocks > 65536 || bytes < 8 || bytes > (1ull << 30))
    return std::nullopt;
  s.blocks = static_cast<std::uint32_t>(blocks);
  s.block_bytes = bytes;
  return s;
}

std::optional<double> nixlbench_reference_gbps(const shape& s) {
  // nixlbench 1.4 built against UCX 1.22, shared memory, batch = blocks; medians of 3 runs.
  static const struct {
    shape s;
    double gbps;
  } table[] = {{{1, 4u << 10}, 0.97},    {{1, 64u << 10}, 9.6},   {{1, 1u << 20}, 15.3},
               {{1, 64u << 20}, 5.4},    {{128, 4u << 10}, 1.63}, {{128, 64u << 10}, 7.7},
               {{128, 1u << 20}, 4.5},   {{4, 64u << 20}, 5.1}};
  for (auto& row : table)
    if (row.s == s)
      return row.gbps;
  return std::nullopt;
}

bool wants(const options& opts, const std::string& kind) {
  return std::find(opts.cases.begin(), opts.cases.end(), kind) != opts.cases.end();
}

int run(const options& opts) {
  node_config cfg;
  cfg.transport = opts.transport;
  cfg.role = "decode";
  cfg.default_deadline_ms = 0;  // a benchmark case may legitimately take long
  cfg.device = opts.device;
  cli::child_process prefill{{cli::self_executable(), "node", "--role", "prefill", "--listen",
                              "127.0.0.1:0", "--transport", opts.transport, "--requests", "1",
                              "--layers", "1", "--block-bytes", "4096", "--pool", opts.pool,
                              "--set", "default_deadline_ms=0", "--set", "device=" + opts.device}};
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
  // Progress on stderr as each case starts (stdout keeps the table or the JSON alone).
  auto cases = plan(opts);
  for (std::size_t c = 0; c < cases.size(); ++c) {
    auto& spec = cases[c];
    std::cerr << "kvferry bench: case " << c + 1 << "/" << cases.size() << ": " << spec.kind
              << ", " << spec.load.requests << " x " << spec.load.layers << " x "
              << spec.load.block_bytes << " B, concurrency " << spec.concurrency << std::endl;
    auto r = run_case(n, peer.value(), prefill, pools, opts, spec);
    ok &= r.failed == 0 && (!opts.verify || r.verified_bytes == spec.load.pool_bytes());
    if (spec.kind == "shapes" && spec.concurrency == 1 && opts.transport == "shm")
      r.nixlbench_gbps =
        nixlbench_reference_gbps({spec.load.layers, spec.load.block_bytes});
    if (spec.kind != "warm-up")
      results.push_back(std::move(r));
  }
  std::vector<hold_result> holds;
  if (wants(opts, "hold")) {
    auto pool = cli::make_pool(n, opts.pool, 1u << 20);
    if (!pool) {
      std::cerr << "kvferry bench: hold pool: " << pool.error().message << "\n";
      ok = false;
    }
    for (auto size : pool ? opts.hold_sizes : std::vector<std::uint32_t>{}) {
      if (size == 0)
        continue;
      std::cerr << "kvferry bench: hold " << size << " requests in flight" << std::endl;
      holds.push_back(measure_hold(n, peer.value(), pool.value().region, size));
      ok &= holds.back().send.all_resolved && holds.back().recv.all_resolved;
    }
  }
  // Last, so that every case before it is the warm work an idle node has behind it.
  std::optional<idle_result> idle;
  if (wants(opts, "idle")) {
    std::cerr << "kvferry bench: idle for " << opts.idle_seconds << " s" << std::endl;
    n.poll();  // events of earlier cases are not part of the figures
    idle = measure_idle({{"decode", ::getpid()}, {"prefill", prefill.pid()}}, 1000ms,
                        std::chrono::milliseconds{
                          static_cast<std::int64_t>(opts.idle_seconds * 1000)});
  }
  prefill.close_stdin();
  n.stop(2000ms);
  prefill.wait(10s);
  if (opts.limits) {
    std::cerr << "kvferry bench: the machine's limits (ucx_perftest, memcpy)" << std::endl;
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
  const device_figures dev = measure_device(opts);
  if (opts.json)
    print_json(opts, results, holds, dev, idle);
  else
    print_table(opts, results, holds, dev, idle);
  if (!opts.plot.empty())
    write_plot(opts, results);
  return ok ? 0 : 1;
}

}  // namespace kvferry::bench
