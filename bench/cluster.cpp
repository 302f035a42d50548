// kvferry cluster: see cluster.hpp.
//
//   start P prefill and M decode processes (each in its own netns with --namespaces)
//   round r = 0 .. rounds:            (the last round is the probe round: no kills)
//     every prefill offers one workload per decode (seed unique per round and pair)
//     every decode is told to fetch from every prefill, in an order of its own
//     a node scheduled for this round is SIGKILLed a moment later
//     every surviving decode answers each fetch (`result`); the killed node is restarted
//   settle: every node's in-flight requests end (deadlines), then its report is read
//   invariants: every fetch answered; every pair without a killed node fully delivered and
//   verified; probes all delivered; at the end nothing in flight, nothing unreleased (engine
//   pools), every node healthy.

#include "bench/cluster.hpp"

#include "cli/child_process.hpp"
#include "cli/protocol.hpp"
#include "cli/workload.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kvferry::bench {

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

int sh(const std::string& command) {
  int rc = std::system((command + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Network namespaces for the nodes: one per node, each with a veth into a bridge that lives in a
// namespace of its own, so nothing is added to the machine's namespace (UCX tcp there would pick
// up interfaces that come and go). Addresses 10.231.0.1 ... in node order.
class fabric {
 public:
  fabric(std::uint32_t nodes, bool wanted) {
    if (!wanted) {
      for (std::uint32_t i = 0; i < nodes; ++i)
        addresses_.push_back("127.0.0.1");
      ready_ = true;
      return;
    }
    tag_ = "kvfc" + std::to_string(::getpid() % 100000);
    bridge_ = tag_ + "br";
    if (sh("ip netns add " + bridge_) != 0)
      return;
    sh("ip -n " + bridge_ + " link add br0 type bridge");
    sh("ip -n " + bridge_ + " link set br0 up");
    for (std::uint32_t i = 0; i < nodes; ++i) {
      auto ns = tag_ + "n" + std::to_string(i);
      auto inner = tag_ + "a" + std::to_string(i), outer = tag_ + "b" + std::to_string(i);
      auto addr = "10.231.0." + std::to_string(i + 1);
      namespaces_.push_back(ns);
      addresses_.push_back(addr);
      if (sh("ip netns add " + ns) != 0 ||
          sh("ip link add " + inner + " netns " + ns + " type veth peer name " + outer +
             " netns " + bridge_) != 0 ||
          sh("ip -n " + bridge_ + " link set " + outer + " master br0") != 0 ||
          sh("ip -n " + bridge_ + " link set " + outer + " up") != 0 ||
          sh("ip -n " + ns + " addr add " + addr + "/24 dev " + inner) != 0 ||
          sh("ip -n " + ns + " link set " + inner + " up") != 0 ||
          sh("ip -n " + ns + " link set lo up") != 0)
        return;
    }
    ready_ = true;
  }
  ~fabric() {
    for (auto& ns : namespaces_)
      sh("ip netns del " + ns);
    if (!bridge_.empty())
      sh("ip netns del " + bridge_);
  }
  bool ready() const { return ready_; }
  const std::string& address(std::uint32_t i) const { return addresses_[i]; }
  // argv run inside node i's namespace (as is without namespaces).
  std::vector<std::string> inside(std::uint32_t i, std::vector<std::string> argv) const {
    if (namespaces_.empty())
      return argv;
    argv.insert(argv.begin(), {ip_binary(), "netns", "exec", namespaces_[i]});
    return argv;
  }

  // iproute2's `ip` by path (children are started by path).
  static std::string ip_binary() {
    for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
      if (::access(path, X_OK) == 0)
        return path;
    return "ip";
  }

 private:
  bool ready_ = false;
  std::string tag_, bridge_;
  std::vector<std::string> namespaces_, addresses_;
};

struct member {
  bool prefill = true;
  std::uint32_t index = 0;  // within its role
  std::uint32_t slot = 0;   // among all nodes (its namespace and address)
  std::unique_ptr<cli::child_process> process;
  std::uint16_t port = 0;
  std::uint32_t starts = 0;
  std::string name() const { return (prefill ? "prefill" : "decode") + std::to_string(index); }
};

// What a node process holds, from /proc: resident memory, threads, open descriptors.
struct process_state {
  std::uint64_t rss_kib = 0, threads = 0, fds = 0;
};

process_state state_of(pid_t pid) {
  process_state s;
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "r");
  if (f != nullptr) {
    char line[256];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      unsigned long long v = 0;
      if (std::sscanf(line, "VmRSS: %llu kB", &v) == 1)
        s.rss_kib = v;
      else if (std::sscanf(line, "Threads: %llu", &v) == 1)
        s.threads = v;
    }
    std::fclose(f);
  }
  if (DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.')
        ++s.fds;
    ::closedir(d);
  }
  return s;
}

struct pair_tally {
  std::uint64_t rounds_ok = 0, rounds_failed = 0, rounds_lost = 0;  // lost: its decode died
  std::uint64_t succeeded = 0, failed = 0, verified_bytes = 0;
};

class cluster {
 public:
  explicit cluster(const cluster_options& o) : o_(o), net_(o.prefills + o.decodes, o.namespaces) {
    for (std::uint32_t i = 0; i < o.prefills; ++i)
      members_.push_back(member{true, i, i, nullptr, 0, 0});
    for (std::uint32_t i = 0; i < o.decodes; ++i)
      members_.push_back(member{false, i, o.prefills + i, nullptr, 0, 0});
    tallies_.resize(std::size_t{o.prefills} * o.decodes);
  }

  bool fabric_ready() const { return net_.ready(); }

  bool start(member& m) {
    std::vector<std::string> argv{cli::self_executable(), "node", "--role",
                                  m.prefill ? "prefill" : "decode", "--listen",
                                  net_.address(m.slot) + ":0", "--requests", "0", "--transport",
                                  o_.transport, "--pool", o_.pool, "--set",
                                  "default_deadline_ms=" + std::to_string(o_.deadline_ms), "--set",
                                  "node_name=" + m.name(), "--set",
                                  // Connecting is set-up here: a bound for failure only (5 s
                                  // ran out under TSan on a busy machine). A killed peer
                                  // refuses at once; nothing here black-holes a connect.
                                  "connect_timeout_ms=60000"};
    m.process = std::make_unique<cli::child_process>(net_.inside(m.slot, argv));
    auto ready = m.process->wait_for_message<cli::protocol::ready>(60s);
    if (!ready) {
      problem(m.name() + " did not start: " + ready.error);
      return false;
    }
    m.port = ready->port;
    ++m.starts;
    return true;
  }

  bool start_all() {
    for (auto& m : members_)
      if (!start(m))
        return false;
    return true;
  }

  member& prefill(std::uint32_t i) { return members_[i]; }
  member& decode(std::uint32_t i) { return members_[o_.prefills + i]; }

  std::uint64_t seed_of(std::uint32_t round, std::uint32_t p, std::uint32_t d) const {
    return o_.seed * 100000000ull + round * 1000000ull + p * 1000ull + d + 1;
  }

  // One round; `killed` is the member SIGKILLed in it (or none).
  void round(std::uint32_t r, member* killed) {
    std::mt19937_64 rng{o_.seed * 7919 + r};
    for (std::uint32_t p = 0; p < o_.prefills; ++p)
      for (std::uint32_t d = 0; d < o_.decodes; ++d) {
        // Bound to its decode: if that one dies first, the offer ends at once (not at its
        // deadline).
        cli::protocol::offer offer{o_.requests, o_.layers, o_.block_bytes, seed_of(r, p, d),
                                   net_.address(decode(d).slot) + ":" +
                                     std::to_string(decode(d).port)};
        prefill(p).process->send_message(offer);
        auto got = prefill(p).process->wait_for_message<cli::protocol::offered>(30s);
        if (!got || !got->accepted())
          problem("round " + std::to_string(r) + ": " + prefill(p).name() + " did not offer: " +
                  (got ? got->error : got.error));
      }
    std::vector<std::vector<std::uint32_t>> order(o_.decodes);
    for (std::uint32_t d = 0; d < o_.decodes; ++d) {
      for (std::uint32_t p = 0; p < o_.prefills; ++p)
        order[d].push_back(p);
      std::shuffle(order[d].begin(), order[d].end(), rng);
      for (auto p : order[d]) {
        cli::protocol::fetch f{net_.address(prefill(p).slot), prefill(p).port, o_.requests,
                               o_.layers,                     o_.block_bytes,  seed_of(r, p, d)};
        decode(d).process->send_message(f);
      }
    }
    if (killed != nullptr) {
      // Soon enough to land in the middle of some transfers, at a moment that varies.
      std::this_thread::sleep_for(std::chrono::milliseconds{2 + rng() % 40});
      killed->process->kill_now(SIGKILL);
      std::cerr << "kvferry cluster: round " << r << ": SIGKILLed " << killed->name() << "\n";
    }
    const auto bytes = std::uint64_t{o_.requests} * o_.layers * o_.block_bytes;
    for (std::uint32_t d = 0; d < o_.decodes; ++d) {
      for (auto p : order[d]) {
        auto& t = tallies_[std::size_t{p} * o_.decodes + d];
        if (killed == &decode(d)) {
          ++t.rounds_lost;
          continue;
        }
        auto res = decode(d).process->wait_for_message<cli::protocol::result>(180s);
        if (!res) {
          problem("round " + std::to_string(r) + ": " + decode(d).name() +
                  " never answered its fetch from " + prefill(p).name() + ": " + res.error);
          ++t.rounds_failed;
          continue;
        }
        t.succeeded += res->succeeded;
        t.failed += res->failed;
        t.verified_bytes += res->verified_bytes;
        if (res->succeeded + res->failed != res->requests)
          problem("round " + std::to_string(r) + ": " + prefill(p).name() + " -> " +
                  decode(d).name() + ": " + std::to_string(res->succeeded) + " + " +
                  std::to_string(res->failed) + " results for " + std::to_string(res->requests) +
                  " requests");
        bool whole = res->succeeded == o_.requests && res->verified_bytes == bytes;
        whole ? ++t.rounds_ok : ++t.rounds_failed;
        if (!whole && killed != &prefill(p))
          problem("round " + std::to_string(r) + ": " + prefill(p).name() + " -> " +
                  decode(d).name() + ": " + std::to_string(res->succeeded) + " of " +
                  std::to_string(o_.requests) + " delivered, " +
                  std::to_string(res->verified_bytes) + " of " + std::to_string(bytes) +
                  " bytes verified, though neither node was killed");
      }
    }
    if (killed != nullptr) {
      killed->process->wait(10s);
      if (start(*killed))
        std::cerr << "kvferry cluster: round " << r << ": restarted " << killed->name()
                  << " on port " << killed->port << "\n";
    }
  }

  // Waits for every node's in-flight requests to end (their deadlines bound it), then reads
  // each node's report and checks it.
  void settle() {
    auto until = steady::now() + std::chrono::milliseconds{o_.deadline_ms} + 30s;
    for (auto& m : members_) {
      std::optional<cli::protocol::report> last;
      do {
        m.process->send_message(cli::protocol::report_request{});
        auto rep = m.process->wait_for_message<cli::protocol::report>(20s);
        if (!rep) {
          problem(m.name() + " gave no report: " + rep.error);
          break;
        }
        last = *rep;
        if (last->in_flight == 0 && (o_.pool != "engine" || last->unreleased == 0))
          break;
        std::this_thread::sleep_for(200ms);
      } while (steady::now() < until);
      if (!last)
        continue;
      reports_.emplace_back(m.name(), *last);
      states_.push_back(state_of(m.process->pid()));
      if (last->in_flight != 0)
        problem(m.name() + " still holds " + std::to_string(last->in_flight) +
                " requests in flight after every deadline passed");
      if (o_.pool == "engine" && last->unreleased != 0)
        problem(m.name() + " holds " + std::to_string(last->unreleased) +
                " unreleased requests (engine pools: every end is provable)");
      if (!last->healthy)
        problem(m.name() + " reports itself unhealthy at the end");
    }
  }

  void stop_all() {
    for (auto& m : members_)
      if (m.process) {
        m.process->send_message(cli::protocol::quit{});
        m.process->close_stdin();
      }
    for (auto& m : members_)
      if (m.process && m.process->wait(30s) != std::optional<int>{0})
        problem(m.name() + " did not exit cleanly after quit");
  }

  void problem(const std::string& what) {
    std::cerr << "kvferry cluster: INVARIANT: " << what << "\n";
    problems_.push_back(what);
  }

  int print(double seconds) const {
    bool ok = problems_.empty();
    if (o_.json) {
      nlohmann::json j;
      j["prefills"] = o_.prefills;
      j["decodes"] = o_.decodes;
      j["rounds"] = o_.rounds + 1;
      j["transport"] = o_.transport;
      j["pool"] = o_.pool;
      j["kill"] = o_.kill;
      j["namespaces"] = o_.namespaces;
      j["burners"] = o_.burners;
      j["seconds"] = seconds;
      j["ok"] = ok;
      j["problems"] = problems_;
      for (std::uint32_t p = 0; p < o_.prefills; ++p)
        for (std::uint32_t d = 0; d < o_.decodes; ++d) {
          auto& t = tallies_[std::size_t{p} * o_.decodes + d];
          j["pairs"].push_back({{"prefill", p},
                                {"decode", d},
                                {"rounds_ok", t.rounds_ok},
                                {"rounds_failed", t.rounds_failed},
                                {"rounds_lost", t.rounds_lost},
                                {"succeeded", t.succeeded},
                                {"failed", t.failed},
                                {"verified_bytes", t.verified_bytes}});
        }
      for (std::size_t k = 0; k < reports_.size(); ++k)
        j["nodes"].push_back({{"node", reports_[k].first},
                              {"report", reports_[k].second.summary()},
                              {"rss_kib", states_[k].rss_kib},
                              {"threads", states_[k].threads},
                              {"fds", states_[k].fds}});
      std::cout << j.dump() << std::endl;
      return ok ? 0 : 1;
    }
    std::printf("kvferry cluster: %uP x %uD, %u rounds + probes, %s, %s pools, kill=%s%s, "
                "%u burners, %.1f s\n",
                o_.prefills, o_.decodes, o_.rounds, o_.transport.c_str(), o_.pool.c_str(),
                o_.kill.c_str(), o_.namespaces ? ", namespaces" : "", o_.burners, seconds);
    std::printf("  %-18s %9s %9s %9s %11s %9s %14s\n", "pair", "rounds_ok", "failed", "lost",
                "succeeded", "failed", "verified_MiB");
    for (std::uint32_t p = 0; p < o_.prefills; ++p)
      for (std::uint32_t d = 0; d < o_.decodes; ++d) {
        auto& t = tallies_[std::size_t{p} * o_.decodes + d];
        std::printf("  prefill%u->decode%u %9llu %9llu %9llu %11llu %9llu %14.1f\n", p, d,
                    static_cast<unsigned long long>(t.rounds_ok),
                    static_cast<unsigned long long>(t.rounds_failed),
                    static_cast<unsigned long long>(t.rounds_lost),
                    static_cast<unsigned long long>(t.succeeded),
                    static_cast<unsigned long long>(t.failed),
                    static_cast<double>(t.verified_bytes) / (1 << 20));
      }
    for (std::size_t k = 0; k < reports_.size(); ++k)
      std::printf("  %-9s rss=%lluMiB threads=%llu fds=%llu %s\n", reports_[k].first.c_str(),
                  static_cast<unsigned long long>(states_[k].rss_kib / 1024),
                  static_cast<unsigned long long>(states_[k].threads),
                  static_cast<unsigned long long>(states_[k].fds),
                  reports_[k].second.summary().c_str());
    if (ok)
      std::printf("every invariant held\n");
    for (auto& p : problems_)
      std::printf("INVARIANT BROKEN: %s\n", p.c_str());
    return ok ? 0 : 1;
  }

 private:
  cluster_options o_;
  fabric net_;
  std::vector<member> members_;
  std::vector<pair_tally> tallies_;
  std::vector<std::pair<std::string, cli::protocol::report>> reports_;
  std::vector<process_state> states_;  // beside reports_: each node at the end
  std::vector<std::string> problems_;
};

// Busy loops on every core asked for, until destroyed.
class burners {
 public:
  explicit burners(std::uint32_t n) {
    for (std::uint32_t i = 0; i < n; ++i) {
      pid_t pid = ::fork();
      if (pid == 0) {
        // Not a holder of the nodes' pipes: a node must see its stdin close when we close it.
        for (int fd = 3; fd < 4096; ++fd)
          ::close(fd);
        for (volatile std::uint64_t x = 0;; x = x + 1) {
        }
      }
      if (pid > 0)
        pids_.push_back(pid);
    }
  }
  ~burners() {
    for (auto pid : pids_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }

 private:
  std::vector<pid_t> pids_;
};

}  // namespace

int run_cluster(const cluster_options& o) {
  if (o.prefills == 0 || o.decodes == 0 || o.requests == 0 || o.layers == 0 ||
      o.block_bytes == 0) {
    std::cerr << "kvferry cluster: every count must be at least 1\n";
    return 2;
  }
  if (o.namespaces && (::geteuid() != 0 || sh("ip netns list") != 0)) {
    std::cerr << "kvferry cluster: --namespaces needs root and iproute2\n";
    return 2;
  }
  auto t0 = steady::now();
  cluster c{o};
  if (!c.fabric_ready()) {
    std::cerr << "kvferry cluster: could not create the network namespaces\n";
    return 2;
  }
  if (!c.start_all()) {
    c.stop_all();
    return 2;
  }
  burners load{o.burners};
  const bool kill_prefill = o.kill == "prefill" || o.kill == "both";
  const bool kill_decode = o.kill == "decode" || o.kill == "both";
  // Prefill 0 dies in the first round, decode 0 in the next (or the first, if alone).
  const std::uint32_t prefill_round = kill_prefill ? 0 : o.rounds;
  const std::uint32_t decode_round = kill_decode ? (kill_prefill ? 1 : 0) : o.rounds;
  for (std::uint32_t r = 0; r <= o.rounds; ++r) {
    member* killed = nullptr;
    bool probes = r == o.rounds;
    if (!probes && r == prefill_round)
      killed = &c.prefill(0);
    else if (!probes && r == decode_round)
      killed = &c.decode(0);
    std::cerr << "kvferry cluster: round " << r << (probes ? " (probes)" : "") << "\n";
    c.round(r, killed);
  }
  c.settle();
  c.stop_all();
  return c.print(std::chrono::duration<double>(steady::now() - t0).count());
}

}  // namespace kvferry::bench
