// kvferry bench: a prefill node (child process) and a decode node (this process) on loopback;
// kvferry's figures beside the machine's limits measured in the same run. No CAF here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvferry::bench {

struct options {
  std::string transport = "shm";          // UCX transports: shm or tcp
  std::vector<std::uint64_t> block_sizes; // bandwidth sweep: bytes per block
  std::vector<std::uint32_t> concurrency; // bandwidth sweep: requests in flight
  std::uint32_t blocks_per_request = 1;   // bandwidth sweep
  std::uint64_t bytes_per_case = 256u << 20;  // roughly how much each sweep case moves
  std::uint32_t small_blocks = 1024;      // small-blocks case: blocks of small_block_bytes
  std::uint64_t small_block_bytes = 16 << 10;
  std::uint32_t rate_requests = 5000;     // rate case: tiny transfers
  std::vector<std::uint32_t> hold_sizes{10000};  // hold case: requests held in flight, per size
  double idle_seconds = 5;                // idle case: the window the CPU time is measured over
  // The cases to run: bandwidth (the sweep), small-blocks, rate, hold, idle.
  std::vector<std::string> cases{"bandwidth", "small-blocks", "rate", "hold", "idle"};
  bool verify = false;                    // check every received byte
  bool cold = false;                      // skip the untimed warm pass before each case
  bool limits = true;                     // also measure ucx_perftest and memcpy
  bool json = false;
  std::string plot;                       // PNG path for a gnuplot plot ("" = none)
  std::string pool = "engine";            // KV pool memory: engine, ucx or cuda
  std::string device = "auto";            // both nodes' node_config::device (pool cuda)
};

bool wants(const options& opts, const std::string& kind);

// Runs the benchmark; prints a table (or one JSON object). Returns the process exit status:
// 0 when every transfer succeeded (and, with verify, every byte matched).
int run(const options& opts);

}  // namespace kvferry::bench
