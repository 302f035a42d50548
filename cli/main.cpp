// kvferry — command-line tool.
//
//   kvferry demo [--transport shm|tcp] [--requests N] [--layers L] [--block-bytes B] [--json]
//       a prefill node (child process) and a decode node (this process) on loopback transfer
//       the workload; every byte is verified. Exit 0 only if all bytes were verified.
//   kvferry node --role prefill|decode [--listen H:P] [--peer H:P] [--config F] [--set k=v]...
//       one standalone node serving (prefill) or fetching (decode) the same workload; talks
//       the JSON-lines protocol of cli/protocol.hpp: messages on stdout, commands on stdin.
//       SIGTERM or SIGINT: stops taking work, lets transfers finish for drain_timeout_ms,
//       prints a report and exits 0; a second signal exits at once (128 + the signal).
//   kvferry bench [--transport shm|tcp] [--sizes ...] [--concurrency ...] [--verify] [--json]
//       bandwidth sweep, request shapes (--shapes BxS..., beside nixlbench's reference
//       figures), small scattered blocks, small-transfer rate, each beside ucx_perftest and
//       memcpy measured in the same run; requests held in flight; CPU used while idle.
//   kvferry chaos [--concurrency N] [--requests M] [--kill] [--seed S] [--json]
//       burst with random cancels, short deadlines, optionally a peer kill; idle; probes.
//   kvferry cluster [--prefills N] [--decodes M] [--kill none|prefill|decode|both]
//                   [--transport shm|tcp] [--namespaces] [--burners K] [--json]
//       N x M node processes, all-to-all verified rounds with kills and restarts; invariants.
//
// No CAF here: the tool uses the engine-facing facade only.

#include "kvferry/node.hpp"
#include "bench/bench.hpp"
#include "bench/chaos.hpp"
#include "bench/cluster.hpp"
#include "cli/child_process.hpp"
#include "cli/protocol.hpp"
#include "cli/workload.hpp"
#include "kvferry/config.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

using namespace kvferry;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

struct node_args {
  std::string role = "both";
  std::string listen;
  std::string peer;
  std::string config_file;
  bool config_given = false;  // --config was on the command line (even as '')
  std::string transport;
  std::vector<std::string> sets;
  std::string pool = "engine";
  bool staged = false;
  cli::workload load;
};

void add_workload_flags(CLI::App* app, node_args& a) {
  app->add_option("--requests", a.load.requests,
                  "requests to transfer (node: 0 offers or fetches nothing at start)")
    ->check(CLI::Range(0u, 1000000u));
  app->add_option("--layers", a.load.layers, "blocks (layers) per request")->check(CLI::Range(1u, 65536u));
  app->add_option("--block-bytes", a.load.block_bytes, "bytes per block")
    ->check(CLI::Range(std::uint64_t{8}, std::uint64_t{1} << 30));
  app->add_option("--seed", a.load.seed, "workload seed (request ids and contents)");
  app->add_option("--pool", a.pool,
                  "KV pool memory: ucx (allocated by UCX), engine (malloc + register) or cuda "
                  "(device memory of the node's device setting; KVFERRY_DEVICE=emulated without "
                  "a GPU)")
    ->check(CLI::IsMember({"ucx", "engine", "cuda"}));
  app->add_flag("--staged", a.staged,
                "prefill copies blocks through staging buffers (copy engine) before putting");
}

// Builds the node configuration: defaults < file (--config or KVFERRY_CONFIG) < KVFERRY_* env
// < --set key=value < the dedicated flags.
result<node_config> make_config(const node_args& a) {
  config_sources src;
  src.environment = kvferry_environment();
  if (a.config_given)
    src.file = a.config_file;  // an empty path is refused by the loader, not ignored
  else if (auto it = src.environment.find("KVFERRY_CONFIG"); it != src.environment.end())
    src.file = it->second;
  for (auto& kv : a.sets) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return result<node_config>{errc::invalid_argument,
                                 "--set needs key=value, got '" + kv + "'"};
    src.overrides.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  src.overrides.emplace_back("role", a.role);
  if (!a.transport.empty())
    src.overrides.emplace_back("transport", a.transport);
  if (!a.listen.empty()) {
    std::string host;
    std::uint16_t port = 0;
    if (!parse_host_port(a.listen, host, port))
      return result<node_config>{errc::invalid_argument,
                                 "--listen needs host:port, got '" + a.listen + "'"};
    src.overrides.emplace_back("listen_host", host);
    src.overrides.emplace_back("listen_port", std::to_string(port));
  }
  return load_node_config(src);
}

using cli::pool_memory;

result<pool_memory> make_pool(node& n, const node_args& a) {
  return cli::make_pool(n, a.pool, a.load.pool_bytes());
}

// SIGTERM and SIGINT, blocked in every thread (the node's threads inherit the mask from the
// thread that starts it), so that only the watcher below receives them.
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

// The first SIGTERM or SIGINT is handed to the main thread, which drains, reports and exits 0
// (the node is stopped on the thread that started it); a second one ends the process at once.
class signal_watch {
 public:
  signal_watch() {
    if (pipe(wake_) != 0)
      wake_[0] = wake_[1] = -1;
    std::thread([this] {
      auto set = stop_signals();
      int sig = 0;
      if (sigwait(&set, &sig) != 0)
        return;
      std::cerr << "kvferry node: " << strsignal(sig) << ": no new work; draining (a second "
                << "signal exits at once)" << std::endl;
      first_.store(sig);
      char byte = 1;
      if (write(wake_[1], &byte, 1) != 1)
        std::_Exit(128 + sig);  // the main thread cannot be told: end now
      if (sigwait(&set, &sig) == 0) {
        std::cerr << "kvferry node: " << strsignal(sig) << " again: exiting now" << std::endl;
        std::_Exit(128 + sig);
      }
    }).detach();
  }
  int wake_fd() const { return wake_[0]; }
  int first() const { return first_.load(); }  // 0 until a signal came

 private:
  int wake_[2] = {-1, -1};
  std::atomic<int> first_{0};
};

// The next line of stdin, unless the signal watch wakes first or stdin ends.
enum class input { line, end, signal };
input next_line(const signal_watch& signals, std::string& pending, std::string& line) {
  for (;;) {
    if (auto nl = pending.find('\n'); nl != std::string::npos) {
      line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      return input::line;
    }
    pollfd fds[2] = {{0, POLLIN, 0}, {signals.wake_fd(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      return input::end;
    }
    if (fds[1].revents != 0)
      return input::signal;
    char buf[4096];
    auto n = read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (pending.empty())
        return input::end;
      line.swap(pending);  // a last line without its newline
      pending.clear();
      return input::line;
    }
    pending.append(buf, static_cast<std::size_t>(n));
  }
}

struct decode_stats {
  std::uint64_t requests = 0, succeeded = 0, failed = 0, bytes = 0, verified_bytes = 0;
  double seconds = 0, p50_ms = 0, p99_ms = 0;
  std::vector<std::string> errors;  // the first few failure messages
  std::vector<transfer_handle> handles;  // the receives (a pool is reused once all released)
};

// Receives every request of the workload from `peer`, waits, verifies every byte.
// Stops waiting when `signals` (if any) saw a signal: the caller drains.
decode_stats run_decode(node& n, peer_id peer, const pool_memory& pool, const cli::workload& w,
                        const signal_watch* signals = nullptr) {
  decode_stats s;
  s.requests = w.requests;
  std::vector<transfer_handle> handles;
  std::vector<steady::time_point> started(w.requests);
  std::vector<double> latency_ms(w.requests, 0.0);
  auto t0 = steady::now();
  for (std::uint32_t i = 0; i < w.requests; ++i) {
    started[i] = steady::now();
    handles.push_back(n.receive(w.request_id(i), peer, w.destination_spans(pool.region, i)));
    handles.back().on_done([&latency_ms, &started, i](const transfer_result&) {
      latency_ms[i] = std::chrono::duration<double, std::milli>(steady::now() - started[i]).count();
    });
  }
  auto deadline = t0 + 120s;
  for (std::uint32_t i = 0; i < w.requests; ++i) {
    std::optional<transfer_result> r;
    for (;;) {  // in slices, so that a signal is noticed
      if (signals != nullptr && signals->first() != 0)
        return s;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
      r = handles[i].wait_for(std::clamp(left, 0ms, signals != nullptr ? 100ms : left));
      if (r || left <= 0ms)
        break;
    }
    if (!r || r->status != transfer_status::succeeded) {
      ++s.failed;
      if (s.errors.size() < 5)
        s.errors.push_back(w.request_id(i) + ": " +
                           (r ? std::string{to_string(r->status)} + " " + r->message
                              : std::string{"no result within 120 s"}));
      continue;
    }
    ++s.succeeded;
    s.bytes += r->bytes;
  }
  s.seconds = std::chrono::duration<double>(steady::now() - t0).count();
  if (auto e = cli::pull_from_device(pool); e.code != errc::none && s.errors.size() < 5)
    s.errors.push_back("reading the KV pool back from the device: " + e.message);
  for (std::uint32_t i = 0; i < w.requests; ++i)
    if (handles[i].status() == transfer_status::succeeded)
      s.verified_bytes += w.verify_destination(pool.base, i);
  std::vector<double> lat;
  for (std::uint32_t i = 0; i < w.requests; ++i)
    if (handles[i].status() == transfer_status::succeeded)
      lat.push_back(latency_ms[i]);
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double q) {
    if (lat.empty())
      return 0.0;
    return lat[std::min(lat.size() - 1, static_cast<std::size_t>(q * (lat.size() - 1) + 0.5))];
  };
  s.p50_ms = pct(0.50);
  s.p99_ms = pct(0.99);
  s.handles = std::move(handles);
  return s;
}

// One protocol message on stdout, flushed: the driver waits for it.
template <class Message>
void say(const Message& m) {
  std::cout << cli::protocol::to_line(m) << std::endl;
}

// -- kvferry node -------------------------------------------------------------------------------

// The workload an `offer` or a `fetch` names.
template <class Command>
cli::workload workload_of(const Command& c) {
  cli::workload w;
  w.requests = c.requests;
  w.layers = c.layers;
  w.block_bytes = c.block_bytes;
  w.seed = c.seed;
  return w;
}

// After a signal: lets transfers finish for drain_timeout_ms, stops, reports, exit status 0.
int drain_on_signal(node& n, int sig, std::chrono::milliseconds drain) {
  auto t0 = steady::now();
  n.stop(drain);
  auto h = n.health();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0);
  std::cerr << "kvferry node: stopped on " << strsignal(sig) << " after " << ms.count()
            << " ms: " << h.succeeded << " succeeded, " << h.failed << " failed, " << h.cancelled
            << " cancelled, " << h.unreleased << " unreleased" << std::endl;
  say(cli::protocol::report{h.succeeded, h.failed, h.cancelled, h.in_flight, h.unreleased, {},
                            h.healthy, h.lost_wakeups});
  return 0;
}

int run_node(const node_args& a) {
  auto cfg = make_config(a);
  if (!cfg) {
    std::cerr << "kvferry node: invalid configuration: " << cfg.error().message << "\n";
    return 2;
  }
  auto blocked = stop_signals();  // before the node's threads start: they inherit the mask
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  auto started = node::start(cfg.value());
  if (!started) {
    std::cerr << "kvferry node: cannot start: " << started.error().message << "\n";
    return 1;
  }
  auto& n = *started.value();
  signal_watch signals;
  const std::chrono::milliseconds drain{cfg->drain_timeout_ms};
  cli::pool_cache pools{n, a.pool};
  std::vector<transfer_handle> sends;
  // The workload of the command line (none with --requests 0: a node driven by stdin alone).
  if (a.load.requests > 0 && (a.role == "prefill" || a.role == "both")) {
    auto pool = pools.take(a.load.pool_bytes());
    if (!pool) {
      std::cerr << "kvferry node: KV pool: " << pool.error().message << "\n";
      return 1;
    }
    a.load.fill_source(pool.value()->base);
    if (auto e = cli::push_to_device(*pool.value()); e.code != errc::none) {
      std::cerr << "kvferry node: KV pool: " << e.message << "\n";
      return 1;
    }
    transfer_options opts;
    opts.stage_through_pool = a.staged;
    for (std::uint32_t i = 0; i < a.load.requests; ++i)
      sends.push_back(
        n.send(a.load.request_id(i), a.load.source_spans(pool.value()->region, i), opts));
    pools.give_back(pool.value(), sends);
  }
  say(cli::protocol::ready{n.port(), n.epoch(), a.role});
  if (a.role == "decode" && !a.peer.empty()) {
    if (a.load.requests == 0) {
      std::cerr << "kvferry node: a decode node with --peer fetches --requests: at least 1\n";
      return 2;
    }
    std::string host;
    std::uint16_t port = 0;
    if (!parse_host_port(a.peer, host, port)) {
      std::cerr << "kvferry node: --peer needs host:port, got '" << a.peer << "'\n";
      return 2;
    }
    auto pool = pools.take(a.load.pool_bytes());
    if (!pool) {
      std::cerr << "kvferry node: KV pool: " << pool.error().message << "\n";
      return 1;
    }
    auto peer = n.connect(host, port);
    if (!peer) {
      std::cerr << "kvferry node: " << peer.error().message << "\n";
      return 1;
    }
    auto s = run_decode(n, peer.value(), *pool.value(), a.load, &signals);
    if (signals.first() != 0)
      return drain_on_signal(n, signals.first(), drain);
    say(cli::protocol::result{s.requests, s.succeeded, s.failed, s.bytes, s.verified_bytes});
    for (auto& e : s.errors)
      std::cerr << "kvferry node: " << e << "\n";
    n.stop(1000ms);
    return s.failed == 0 && s.verified_bytes == a.load.pool_bytes() ? 0 : 1;
  }
  // Serve until stdin closes or "quit"; answer "report" with counts and the transports used,
  // "offer" by sending that workload too (kvferry bench and cluster drive their cases this
  // way), and "fetch" by receiving a workload from the prefill it names (kvferry cluster).
  // Other lines are ignored, as before, with a note on stderr.
  std::string line, pending;
  for (;;) {
    auto got = next_line(signals, pending, line);
    if (got == input::signal)
      return drain_on_signal(n, signals.first(), drain);
    if (got == input::end)
      break;
    auto kind = cli::protocol::kind_of(line).value_or("");
    if (kind == cli::protocol::quit::name)
      break;
    if (kind == cli::protocol::offer::name) {
      auto o = cli::protocol::parse<cli::protocol::offer>(line);
      if (!o)
        std::cerr << "kvferry node: " << o.error << "\n";
      if (!o || o->requests == 0 || o->layers == 0 || o->block_bytes == 0) {
        say(cli::protocol::offered{0, "bad_offer"});
        continue;
      }
      auto w = workload_of(*o);
      auto p = pools.take(w.pool_bytes());
      if (!p) {
        std::cerr << "kvferry node: KV pool: " << p.error().message << "\n";
        say(cli::protocol::offered{0, "pool"});
        continue;
      }
      transfer_options opts;
      opts.stage_through_pool = a.staged;
      if (!o->bind.empty()) {
        std::string host;
        std::uint16_t port = 0;
        auto peer = parse_host_port(o->bind, host, port)
                      ? n.connect(host, port)
                      : result<peer_id>{errc::invalid_argument, "bind needs host:port"};
        if (!peer) {
          std::cerr << "kvferry node: offer bound to " << o->bind << ": "
                    << peer.error().message << "\n";
          pools.give_back(p.value(), {});
          say(cli::protocol::offered{0, "bind"});
          continue;
        }
        opts.bound_to = peer.value();
      }
      w.fill_source(p.value()->base);
      if (auto e = cli::push_to_device(*p.value()); e.code != errc::none) {
        std::cerr << "kvferry node: KV pool: " << e.message << "\n";
        pools.give_back(p.value(), {});
        say(cli::protocol::offered{0, "pool"});
        continue;
      }
      std::vector<transfer_handle> these;
      for (std::uint32_t i = 0; i < w.requests; ++i)
        these.push_back(n.send(w.request_id(i), w.source_spans(p.value()->region, i), opts));
      pools.give_back(p.value(), these);
      say(cli::protocol::offered{w.requests, ""});
      continue;
    }
    if (kind == cli::protocol::fetch::name) {
      auto f = cli::protocol::parse<cli::protocol::fetch>(line);
      if (!f || f->requests == 0 || f->layers == 0 || f->block_bytes == 0) {
        std::cerr << "kvferry node: bad fetch: " << (f ? "an empty workload" : f.error) << "\n";
        say(cli::protocol::result{f ? f->requests : 0, 0, f ? f->requests : 0, 0, 0});
        continue;
      }
      auto w = workload_of(*f);
      auto fail_all = [&](const std::string& why) {
        std::cerr << "kvferry node: fetch from " << f->host << ":" << f->port << ": " << why
                  << "\n";
        say(cli::protocol::result{w.requests, 0, w.requests, 0, 0});
      };
      auto peer = n.connect(f->host, f->port);  // the same peer again: the same peer id
      if (!peer) {
        fail_all(peer.error().message);
        continue;
      }
      auto p = pools.take(w.pool_bytes());
      if (!p) {
        fail_all("KV pool: " + p.error().message);
        continue;
      }
      auto s = run_decode(n, peer.value(), *p.value(), w, &signals);
      if (signals.first() != 0)
        return drain_on_signal(n, signals.first(), drain);
      pools.give_back(p.value(), std::move(s.handles));
      say(cli::protocol::result{s.requests, s.succeeded, s.failed, s.bytes, s.verified_bytes});
      for (auto& e : s.errors)
        std::cerr << "kvferry node: " << e << "\n";
      continue;
    }
    if (kind == cli::protocol::report_request::name) {
      // The transports first: asking the transport for its peers also brings its counts
      // (lost wake-ups, replacements) into health, so the report is current, not up to a
      // health tick old.
      std::vector<std::string> transports;
      for (auto peer : n.sent_to_peers())
        for (auto& t : n.transports_to(peer))
          if (std::find(transports.begin(), transports.end(), t) == transports.end())
            transports.push_back(t);
      auto h = n.health();
      say(cli::protocol::report{h.succeeded, h.failed, h.cancelled, h.in_flight, h.unreleased,
                                std::move(transports), h.healthy, h.lost_wakeups});
      continue;
    }
    std::cerr << "kvferry node: ignoring a line that is no command: " << line << "\n";
  }
  n.stop(1000ms);
  return 0;
}

// -- kvferry demo -------------------------------------------------------------------------------

int run_demo(node_args a, bool json) {
  a.role = "decode";
  if (a.load.requests == 0) {
    std::cerr << "kvferry demo: --requests must be at least 1\n";
    return 2;
  }
  auto cfg = make_config(a);
  if (!cfg) {
    std::cerr << "kvferry demo: invalid configuration: " << cfg.error().message << "\n";
    return 2;
  }
  std::vector<std::string> argv{cli::self_executable(),  "node",
                                "--role",                "prefill",
                                "--listen",              cfg->listen_host + ":0",
                                "--transport",           cfg->transport,
                                "--requests",            std::to_string(a.load.requests),
                                "--layers",              std::to_string(a.load.layers),
                                "--block-bytes",         std::to_string(a.load.block_bytes),
                                "--seed",                std::to_string(a.load.seed),
                                "--pool",                a.pool};
  for (auto& s : a.sets)
    argv.insert(argv.end(), {"--set", s});
  if (a.staged)
    argv.push_back("--staged");
  if (a.config_given)
    argv.insert(argv.end(), {"--config", a.config_file});
  cli::child_process prefill{argv};
  if (!prefill.running()) {
    std::cerr << "kvferry demo: cannot start the prefill node process\n";
    return 1;
  }
  auto ready = prefill.wait_for_message<cli::protocol::ready>(60s);
  if (!ready) {
    std::cerr << "kvferry demo: the prefill node did not become ready: " << ready.error << "\n";
    return 1;
  }
  auto port = ready->port;
  auto started = node::start(cfg.value());
  if (!started) {
    std::cerr << "kvferry demo: cannot start the decode node: " << started.error().message << "\n";
    return 1;
  }
  auto& n = *started.value();
  auto pool = make_pool(n, a);
  if (!pool) {
    std::cerr << "kvferry demo: KV pool: " << pool.error().message << "\n";
    return 1;
  }
  auto peer = n.connect(cfg->listen_host, port);
  if (!peer) {
    std::cerr << "kvferry demo: " << peer.error().message << "\n";
    return 1;
  }
  auto s = run_decode(n, peer.value(), pool.value(), a.load);
  prefill.send_message(cli::protocol::report_request{});
  auto report = prefill.wait_for_message<cli::protocol::report>(10s);
  if (!report)
    std::cerr << "kvferry demo: no report from the prefill node: " << report.error << "\n";
  // Empty without a report, as the summary has always shown it.
  auto report_text = report ? report->summary() : std::string{};
  auto transports = report ? report->transport_list() : std::string{};
  prefill.close_stdin();
  auto decode_health = n.health();
  n.stop(1000ms);
  auto child_status = prefill.wait(10s);
  bool ok = s.failed == 0 && s.verified_bytes == a.load.pool_bytes() && child_status &&
            *child_status == 0;
  double gbps = s.seconds > 0 ? static_cast<double>(s.bytes) / s.seconds / 1e9 : 0.0;
  if (json) {
    nlohmann::ordered_json out;  // ordered: fields print in the order they have always had
    out["requests"] = s.requests;
    out["succeeded"] = s.succeeded;
    out["failed"] = s.failed;
    out["bytes"] = s.bytes;
    out["verified_bytes"] = s.verified_bytes;
    out["expected_bytes"] = a.load.pool_bytes();
    out["seconds"] = s.seconds;
    out["gb_per_s"] = gbps;
    out["p50_ms"] = s.p50_ms;
    out["p99_ms"] = s.p99_ms;
    out["transport"] = cfg->transport;
    out["rma_transports"] = transports;
    out["decode_health"] = decode_health.to_string();
    out["prefill_report"] = report_text;
    out["ok"] = ok;
    std::cout << out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace)
              << std::endl;
  } else {
    std::printf("kvferry demo: %llu requests x %u layers x %llu B blocks, transport %s (UCX: %s)\n",
                static_cast<unsigned long long>(s.requests), a.load.layers,
                static_cast<unsigned long long>(a.load.block_bytes), cfg->transport.c_str(),
                transports.empty() ? "?" : transports.c_str());
    std::printf("  %llu/%llu succeeded, %llu failed; %llu bytes, %llu verified\n",
                static_cast<unsigned long long>(s.succeeded),
                static_cast<unsigned long long>(s.requests),
                static_cast<unsigned long long>(s.failed),
                static_cast<unsigned long long>(s.bytes),
                static_cast<unsigned long long>(s.verified_bytes));
    std::printf("  %.3f s, %.2f GB/s, request latency p50 %.2f ms, p99 %.2f ms\n", s.seconds, gbps,
                s.p50_ms, s.p99_ms);
    std::printf("  decode health: %s\n  prefill: %s\n", decode_health.to_string().c_str(),
                report_text.c_str());
    std::printf("%s\n", ok ? "OK: every byte verified" : "FAILED");
  }
  for (auto& e : s.errors)
    std::cerr << "kvferry demo: " << e << "\n";
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvferry: moves KV-cache blocks between prefill and decode workers"};
  app.require_subcommand(1);

  node_args demo_args;
  demo_args.transport = "shm";
  bool json = false;
  auto* demo = app.add_subcommand("demo", "prefill + decode processes on loopback, verified transfer");
  demo->add_option("--transport", demo_args.transport, "UCX transports: shm, tcp or auto")
    ->check(CLI::IsMember({"shm", "tcp", "auto"}));
  demo->add_flag("--json", json, "print the summary as one JSON object");
  auto* demo_config = demo->add_option("--config", demo_args.config_file, "TOML configuration file");
  demo->add_option("--set", demo_args.sets, "configuration override key=value (repeatable)");
  add_workload_flags(demo, demo_args);

  node_args node_a;
  auto* nodecmd = app.add_subcommand("node", "run one standalone node");
  nodecmd->add_option("--role", node_a.role, "prefill, decode or both")
    ->check(CLI::IsMember({"prefill", "decode", "both"}));
  nodecmd->add_option("--listen", node_a.listen, "host:port to publish on (port 0: any)");
  nodecmd->add_option("--peer", node_a.peer,
                      "host:port of the prefill node (decode role; without it the node "
                      "fetches what `fetch` lines on stdin name)");
  auto* node_config_opt = nodecmd->add_option("--config", node_a.config_file, "TOML configuration file");
  nodecmd->add_option("--set", node_a.sets, "configuration override key=value (repeatable)");
  nodecmd->add_option("--transport", node_a.transport, "UCX transports: shm, tcp or auto");
  add_workload_flags(nodecmd, node_a);

  bench::options bench_opts;
  bench_opts.block_sizes = {4096, 65536, 1u << 20, 16u << 20, 64u << 20};
  bench_opts.concurrency = {1, 16};
  auto* benchcmd = app.add_subcommand("bench", "kvferry's speed beside the machine's limits");
  benchcmd->add_option("--transport", bench_opts.transport, "UCX transports: shm or tcp")
    ->check(CLI::IsMember({"shm", "tcp"}));
  benchcmd->add_option("--sizes", bench_opts.block_sizes, "bandwidth sweep: bytes per block");
  benchcmd->add_option("--concurrency", bench_opts.concurrency, "bandwidth sweep: requests in flight");
  benchcmd->add_option("--blocks-per-request", bench_opts.blocks_per_request,
                       "bandwidth sweep: blocks per request")
    ->check(CLI::Range(1u, 65536u));
  std::vector<std::string> shape_texts;
  auto* shapes_opt =
    benchcmd
      ->add_option("--shapes", shape_texts,
                   "shapes case: requests of B blocks of S bytes, as BxS (128x4KiB, 4x64MiB)")
      ->check(CLI::Validator(
        [](std::string& text) {
          return bench::parse_shape(text)
                   ? std::string{}
                   : "'" + text + "' is not BxS: B blocks (1..65536) of S bytes (8 B..1 GiB), "
                                  "S in bytes or with K, KiB, M, MiB, G or GiB";
        },
        "BxS", "shape"));
  benchcmd->add_option("--bytes-per-case", bench_opts.bytes_per_case,
                       "roughly how many bytes each sweep case moves");
  benchcmd->add_option("--small-blocks", bench_opts.small_blocks,
                       "small-blocks case: blocks per request (of --small-block-bytes)");
  benchcmd->add_option("--small-block-bytes", bench_opts.small_block_bytes, "small-blocks case");
  benchcmd->add_option("--rate-requests", bench_opts.rate_requests, "rate case: tiny transfers");
  benchcmd->add_option("--hold", bench_opts.hold_sizes,
                       "hold case: requests held in flight, one run per size")
    ->check(CLI::Range(1u, 10000000u));
  benchcmd->add_option("--idle-seconds", bench_opts.idle_seconds,
                       "idle case: seconds of idling the CPU time is measured over")
    ->check(CLI::Range(0.1, 3600.0));
  benchcmd->add_option("--cases", bench_opts.cases, "cases to run (default: all)")
    ->check(CLI::IsMember({"bandwidth", "shapes", "small-blocks", "rate", "hold", "idle"}));
  benchcmd->add_flag("--verify", bench_opts.verify, "check every received byte");
  benchcmd->add_flag("--cold", bench_opts.cold,
                     "time first-touch too: no untimed warm pass over each case's pool");
  benchcmd->add_flag("!--no-limits", bench_opts.limits, "skip ucx_perftest and memcpy");
  benchcmd->add_flag("--json", bench_opts.json, "print one JSON object");
  benchcmd->add_option("--plot", bench_opts.plot, "write a PNG plot of GB/s against block size");
  benchcmd->add_option("--pool", bench_opts.pool,
                       "KV pool memory: engine, ucx or cuda (device memory, see node --pool)")
    ->check(CLI::IsMember({"ucx", "engine", "cuda"}));
  benchcmd->add_option("--device", bench_opts.device,
                       "both nodes' device setting (auto, none, emulated, cuda:<n>): what "
                       "--pool cuda allocates on");
  bench::chaos_options chaos_opts;
  auto* chaoscmd = app.add_subcommand("chaos", "burst, cancels, deadlines, peer kill; then probes");
  chaoscmd->add_option("--concurrency", chaos_opts.concurrency, "requests in flight")
    ->check(CLI::Range(1u, 65536u));
  chaoscmd->add_option("--requests", chaos_opts.requests, "requests in the burst")
    ->check(CLI::Range(3u, 1000000u));
  chaoscmd->add_option("--cancel-share", chaos_opts.cancel_share, "share cancelled at random")
    ->check(CLI::Range(0.0, 1.0));
  chaoscmd->add_option("--short-deadline-share", chaos_opts.short_deadline_share,
                       "share given a 1..5 ms deadline")
    ->check(CLI::Range(0.0, 1.0));
  chaoscmd->add_flag("--kill", chaos_opts.kill_peer, "SIGKILL and restart the prefill mid-burst");
  chaoscmd->add_option("--idle-ms", chaos_opts.idle_ms, "idle window before the probes");
  chaoscmd->add_option("--probes", chaos_opts.probes, "probe transfers after the idle window");
  chaoscmd->add_option("--seed", chaos_opts.seed, "makes the run's choices reproducible");
  chaoscmd->add_option("--transport", chaos_opts.transport, "UCX transports: shm or tcp")
    ->check(CLI::IsMember({"shm", "tcp"}));
  chaoscmd->add_flag("--json", chaos_opts.json, "print one JSON object");

  bench::cluster_options cluster_opts;
  auto* clustercmd = app.add_subcommand(
    "cluster", "N prefill x M decode processes all-to-all, with kills; invariants checked");
  clustercmd->add_option("--prefills", cluster_opts.prefills, "prefill nodes")
    ->check(CLI::Range(1u, 64u));
  clustercmd->add_option("--decodes", cluster_opts.decodes, "decode nodes")
    ->check(CLI::Range(1u, 64u));
  clustercmd->add_option("--rounds", cluster_opts.rounds, "rounds before the probe round")
    ->check(CLI::Range(1u, 1000u));
  clustercmd->add_option("--requests", cluster_opts.requests, "requests per pair and round")
    ->check(CLI::Range(1u, 100000u));
  clustercmd->add_option("--layers", cluster_opts.layers, "blocks per request")
    ->check(CLI::Range(1u, 4096u));
  clustercmd->add_option("--block-bytes", cluster_opts.block_bytes, "bytes per block")
    ->check(CLI::Range(std::uint64_t{8}, std::uint64_t{64} << 20));
  clustercmd->add_option("--transport", cluster_opts.transport, "UCX transports: shm or tcp")
    ->check(CLI::IsMember({"shm", "tcp"}));
  clustercmd->add_option("--pool", cluster_opts.pool, "KV pools: engine or ucx")
    ->check(CLI::IsMember({"engine", "ucx"}));
  clustercmd->add_option("--kill", cluster_opts.kill,
                         "SIGKILL and restart mid-round: none, prefill, decode or both")
    ->check(CLI::IsMember({"none", "prefill", "decode", "both"}));
  clustercmd->add_flag("--namespaces", cluster_opts.namespaces,
                       "each node in a network namespace of its own (root, iproute2)");
  clustercmd->add_option("--burners", cluster_opts.burners, "busy-loop processes beside it")
    ->check(CLI::Range(0u, 256u));
  clustercmd->add_option("--deadline-ms", cluster_opts.deadline_ms,
                         "every node's default_deadline_ms")
    ->check(CLI::Range(100u, 600000u));
  clustercmd->add_option("--seed", cluster_opts.seed, "workload seeds and kill moments");
  clustercmd->add_flag("--json", cluster_opts.json, "print one JSON object");

  CLI11_PARSE(app, argc, argv);
  demo_args.config_given = demo_config->count() > 0;
  node_a.config_given = node_config_opt->count() > 0;
  if (chaoscmd->parsed())
    return bench::run_chaos(chaos_opts);
  if (clustercmd->parsed())
    return bench::run_cluster(cluster_opts);
  if (demo->parsed())
    return run_demo(demo_args, json);
  if (benchcmd->parsed()) {
    if (shapes_opt->count() > 0) {
      bench_opts.shapes.clear();
      for (auto& text : shape_texts)
        bench_opts.shapes.push_back(*bench::parse_shape(text));  // checked above
    }
    return bench::run(bench_opts);
  }
  return run_node(node_a);
}
