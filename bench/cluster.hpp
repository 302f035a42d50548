// kvferry cluster: N prefill and M decode nodes as processes (`kvferry node`, driven by
// `offer` and `fetch` lines), each optionally in a network namespace of its own joined by a
// bridge, moving verified traffic all-to-all in rounds while nodes are SIGKILLed and restarted
// on a schedule, optionally with burner processes keeping every core busy. Reports per-pair
// results and the invariants, as a table or JSON; exit status 1 when an invariant broke.
// No CAF here.
#pragma once

#include <cstdint>
#include <string>

namespace kvferry::bench {

struct cluster_options {
  std::uint32_t prefills = 4;
  std::uint32_t decodes = 4;
  std::uint32_t rounds = 3;           // rounds with kills (as scheduled), then one probe round
  std::uint32_t requests = 16;        // per pair and round
  std::uint32_t layers = 8;           // blocks per request
  std::uint64_t block_bytes = 64 << 10;
  std::string transport = "tcp";      // shm or tcp
  std::string pool = "engine";        // engine or ucx
  // What is SIGKILLed mid-round and restarted after it: "none", "prefill" (prefill 0 in the
  // first round), "decode" (decode 0 in the next round, or the first), or "both".
  std::string kill = "both";
  bool namespaces = false;            // each node in a netns of its own (root, iproute2)
  std::uint32_t burners = 0;          // busy-loop processes beside the cluster
  std::uint32_t deadline_ms = 60000;  // every node's default_deadline_ms
  std::uint64_t seed = 1;
  bool json = false;
};

// Exit status: 0 when every invariant held, 1 otherwise, 2 when the cluster could not start.
int run_cluster(const cluster_options& opts);

}  // namespace kvferry::bench
