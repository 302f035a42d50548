// A short 4P4D cluster (`kvferry cluster`): eight node processes, all-to-all verified rounds, a
// prefill SIGKILLed and restarted in one round and a decode in the next, then a probe round;
// each node in a network namespace of its own where the machine allows it (root, iproute2),
// on loopback otherwise. The tool checks the invariants; the test reads its JSON and checks
// the per-pair figures the kills must leave.
#include "cli/child_process.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using namespace kvferry;

namespace {

bool namespaces_possible() {
  return ::geteuid() == 0 && std::system("ip netns list >/dev/null 2>&1") == 0;
}

void check_cluster(const std::string& transport) {
  std::vector<std::string> argv{KVFERRY_BINARY, "cluster",   "--prefills",   "4",
                                "--decodes",    "4",         "--rounds",     "2",
                                "--requests",   "8",         "--layers",     "4",
                                "--transport",  transport,   "--kill",       "both",
                                "--json"};
  const bool ns = namespaces_possible();
  if (ns)
    argv.push_back("--namespaces");
  else
    MESSAGE("no network namespaces here (needs root and iproute2): the nodes share loopback");
  cli::child_process tool{argv};
  REQUIRE(tool.running());
  // Generous: eight processes, two kills and restarts, on a busy machine.
  auto line = tool.wait_for_line("{", 240s);
  REQUIRE_MESSAGE(line, "kvferry cluster printed no JSON");
  auto j = nlohmann::json::parse(*line);
  INFO(j.dump(1));
  CHECK(j["ok"] == true);
  CHECK(j["problems"].empty());
  CHECK(j["namespaces"] == ns);
  REQUIRE(j["pairs"].size() == 16);
  const std::uint64_t pair_round_bytes = 8ull * 4 * (64 << 10);
  for (auto& pair : j["pairs"]) {
    auto p = pair["prefill"].get<int>(), d = pair["decode"].get<int>();
    CAPTURE(p);
    CAPTURE(d);
    auto ok = pair["rounds_ok"].get<std::uint64_t>();
    auto lost = pair["rounds_lost"].get<std::uint64_t>();
    auto failed = pair["rounds_failed"].get<std::uint64_t>();
    // Decode 0 died in round 1: that round of its pairs is lost, no other.
    CHECK(lost == (d == 0 ? 1u : 0u));
    // Only prefill 0's pairs may fail, and only in the round it died (round 0).
    CHECK(failed <= (p == 0 ? 1u : 0u));
    CHECK(ok + failed + lost == 3);
    // The probe round (and every round without a kill) delivered and verified everything.
    CHECK(pair["verified_bytes"].get<std::uint64_t>() >= ok * pair_round_bytes);
  }
  REQUIRE(j["nodes"].size() == 8);
  for (auto& n : j["nodes"])
    CHECK_MESSAGE(n["report"].get<std::string>().find("healthy=1") != std::string::npos,
                  n.dump());
  CHECK(tool.wait(30s) == 0);
}

}  // namespace

TEST_CASE("a 4P4D cluster over tcp survives a prefill and a decode SIGKILLed mid-round and restarted: every invariant holds") {
  check_cluster("tcp");
}

TEST_CASE("a 4P4D cluster over shared memory survives a prefill and a decode SIGKILLed mid-round and restarted: every invariant holds") {
  check_cluster("shm");
}
