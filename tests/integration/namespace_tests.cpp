// F24: two nodes on one host in different network namespaces (as containers are), joined by a
// veth pair: the prefill is a `kvferry node` process in a namespace of its own, the decode this
// process, in the machine's. CAF connects over the veth pair, and UCX's shared memory is
// visible to both. Before the change every request failed at its deadline with nothing
// delivered: the receiving worker polled its shared-memory queue only after a wake-up, and the
// wake-up socket (abstract unix namespace) belongs to the network namespace
// (transport/ucx_config.cpp, engine.cpp).
//
// Needs root and iproute2 (`ip netns`); elsewhere the test says so and checks nothing.
#include "kvferry/node.hpp"
#include "cli/child_process.hpp"
#include "cli/protocol.hpp"
#include "cli/workload.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using namespace kvferry;

namespace {

// Runs a shell command quietly; its exit status.
int run(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str());
}

// A network namespace `name` joined to this one by a veth pair (`name` inside at `inside`,
// `name`h here at `here`); removed again at the end.
struct network_namespace {
  std::string name, inside, here;
  bool ready = false;

  network_namespace() {
    const auto pid = static_cast<unsigned>(::getpid());
    name = "kvf" + std::to_string(pid);  // the veth ends' names too: at most 15 characters
    const std::string net =
      "10." + std::to_string(100 + pid % 100) + "." + std::to_string(pid / 100 % 250) + ".";
    inside = net + "1";
    here = net + "2";
    ready = run("ip netns add " + name) == 0 &&
            run("ip link add " + name + " type veth peer name " + name + "h") == 0 &&
            run("ip link set " + name + " netns " + name) == 0 &&
            run("ip -n " + name + " addr add " + inside + "/24 dev " + name) == 0 &&
            run("ip addr add " + here + "/24 dev " + name + "h") == 0 &&
            run("ip -n " + name + " link set " + name + " up") == 0 &&
            run("ip link set " + name + "h up") == 0 &&
            run("ip -n " + name + " link set lo up") == 0;
  }
  ~network_namespace() {
    run("ip netns del " + name);  // takes its veth end, and with it the other
  }
};

// iproute2's `ip` (children are spawned by path); empty when there is none.
std::string ip_binary() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (::access(path, X_OK) == 0)
      return path;
  return {};
}

std::vector<std::string> in_namespace(const std::string& ns, std::vector<std::string> argv) {
  argv.insert(argv.begin(), {ip_binary(), "netns", "exec", ns});
  return argv;
}

std::vector<std::string> prefill_args(const std::string& listen, const cli::workload& w) {
  return {KVFERRY_BINARY, "node", "--role", "prefill", "--listen", listen, "--transport", "shm",
          "--requests", std::to_string(w.requests), "--layers", std::to_string(w.layers),
          "--block-bytes", std::to_string(w.block_bytes), "--seed", std::to_string(w.seed),
          "--set", "default_deadline_ms=20000"};
}

}  // namespace

TEST_CASE("F24: nodes in different network namespaces on one host move verified bytes over shared memory") {
  if (::geteuid() != 0 || ip_binary().empty() || run("ip netns list") != 0) {
    MESSAGE("F24 not checked: needs root and iproute2 to create network namespaces");
    return;
  }
  network_namespace ns;
  REQUIRE_MESSAGE(ns.ready, "could not create the network namespace " << ns.name);

  std::string pool;
  SUBCASE("engine memory (data messages)") { pool = "engine"; }
  SUBCASE("UCX-allocated memory (puts into a mapping)") { pool = "ucx"; }
  CAPTURE(pool);
  cli::workload w;
  w.requests = 32;
  w.layers = 4;
  w.block_bytes = 256 << 10;  // 32 MiB in all
  w.seed = 24;

  cli::child_process prefill{in_namespace(ns.name, prefill_args(ns.inside + ":0", w))};
  auto ready = prefill.wait_for_message<cli::protocol::ready>(60s);
  REQUIRE_MESSAGE(ready, ready.error);

  node_config cfg;
  cfg.transport = "shm";
  cfg.default_deadline_ms = 20000;
  auto started = node::start(cfg);
  REQUIRE_MESSAGE(started, started.error().message);
  auto& decode = *started.value();
  auto peer = decode.connect(ns.inside, ready->port);
  REQUIRE_MESSAGE(peer, peer.error().message);
  std::vector<unsigned char> engine_pool;
  auto region = pool == "ucx" ? decode.allocate_region(w.pool_bytes())
                              : (engine_pool.assign(w.pool_bytes(), 0),
                                 decode.register_region(engine_pool.data(), engine_pool.size()));
  REQUIRE_MESSAGE(region, region.error().message);
  const auto* base = static_cast<const unsigned char*>(decode.region_base(region.value()));

  const auto started_at = std::chrono::steady_clock::now();
  std::vector<transfer_handle> receives;
  for (std::uint32_t i = 0; i < w.requests; ++i)
    receives.push_back(decode.receive(w.request_id(i), peer.value(),
                                      w.destination_spans(region.value(), i)));
  for (std::uint32_t i = 0; i < w.requests; ++i) {
    auto r = receives[i].wait_for(60s);
    REQUIRE(r);
    CHECK_MESSAGE(r->status == transfer_status::succeeded, r->message);
    CHECK(w.verify_destination(base, i) == w.request_bytes());
  }
  // Well inside the deadline: delivered, not rescued by it (generous: a busy machine).
  CHECK(std::chrono::steady_clock::now() - started_at < 15s);
  // Data messages needed this node to read what no wake-up announced, and health says so (it
  // takes the transport's counts once a second or so).
  auto h = decode.health();
  for (int i = 0; i < 50 && pool == "engine" && h.lost_wakeups == 0; ++i) {
    std::this_thread::sleep_for(100ms);
    h = decode.health();
  }
  CAPTURE(h.to_string());
  CHECK(h.healthy);
  if (pool == "engine")
    CHECK(h.lost_wakeups > 0);

  // And over shared memory, not over something else that happened to work.
  prefill.send_message(cli::protocol::report_request{});
  auto report = prefill.wait_for_message<cli::protocol::report>(10s);
  REQUIRE_MESSAGE(report, report.error);
  CAPTURE(report->transport_list());
  CHECK(report->succeeded == w.requests);
  CHECK(report->transport_list().find("tcp") == std::string::npos);
  CHECK((report->transport_list().find("posix") != std::string::npos ||
         report->transport_list().find("sysv") != std::string::npos));
  prefill.send_message(cli::protocol::quit{});
  CHECK(prefill.wait(30s) == 0);
  decode.stop(5s);
}
