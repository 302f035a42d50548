// kvferry bench: a prefill node (child process) and a decode node (this process) on loopback;
// kvferry's figures beside the machine's limits measured in the same run. No CAF here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvferry::bench {

// One request's shape in the shapes case: `blocks` blocks of `block_bytes` each (nixlbench's
// batch size and block size).
struct shape {
  std::uint32_t blocks = 1;
  std::uint64_t block_bytes = 4096;
  bool operator==(const shape& o) const { return blocks == o.blocks && block_bytes == o.block_bytes; }
};

// "BxS": B blocks (1 .. 65536) of S bytes (8 B .. 1 GiB), S in bytes or with a K/KiB, M/MiB or
// G/GiB suffix ("128x4KiB", "4x64M"). Nothing for anything else.
std::optional<shape> parse_shape(const std::string& text);

// What nixlbench 1.4 (on UCX 1.22) reached for a shape on this project's 2-core VM over shared
// memory, one request in flight (bench/RESULTS.md, "Against nixlbench"): GB/s, or nothing for a
// shape it was not measured at. A reference printed beside kvferry's figures, never a result.
std::optional<double> nixlbench_reference_gbps(const shape& s);

struct options {
  std::string transport = "shm";          // UCX transports: shm or tcp
  std::vector<std::uint64_t> block_sizes; // bandwidth sweep: bytes per block
  std::vector<std::uint32_t> concurrency; // bandwidth sweep: requests in flight
  std::uint32_t blocks_per_request = 1;   // bandwidth sweep
  // shapes case: requests of these shapes, at each of `concurrency`; the default is the table
  // of bench/RESULTS.md measured against nixlbench
  std::vector<shape> shapes{{1, 4u << 10},    {1, 64u << 10},  {1, 1u << 20},  {1, 64u << 20},
                            {128, 4u << 10}, {128, 64u << 10}, {128, 1u << 20}, {4, 64u << 20}};
  std::uint64_t bytes_per_case = 256u << 20;  // roughly how much each sweep case moves
  std::uint32_t small_blocks = 1024;      // small-blocks case: blocks of small_block_bytes
  std::uint64_t small_block_bytes = 16 << 10;
  std::uint32_t rate_requests = 5000;     // rate case: tiny transfers
  std::vector<std::uint32_t> hold_sizes{10000};  // hold case: requests held in flight, per size
  double idle_seconds = 5;                // idle case: the window the CPU time is measured over
  // The cases to run: bandwidth (the sweep), shapes, small-blocks, rate, hold, idle.
  std::vector<std::string> cases{"bandwidth", "shapes", "small-blocks", "rate", "hold", "idle"};
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
