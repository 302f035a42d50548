// The hold case of kvferry bench: how the cost of a request grows with the number of requests
// held in flight at once. For each size N, N sends that no peer fetches, then N receives whose
// sends the prefill never offers, are posted, held, cancelled, and waited on until terminal and
// released; the time of each step, the heap per held request, and whether the node stayed
// healthy throughout. No CAF here.
#pragma once

#include "kvferry/block.hpp"

#include <cstdint>
#include <vector>

namespace kvferry {
class node;
}

namespace kvferry::bench {

// One side (sends or receives) at one size.
struct hold_side {
  double post_s = 0;     // from the first call until every request actor runs
  double resolve_s = 0;  // from the first cancel() until every handle is terminal
  double release_s = 0;  // from then until every handle is released
  // CPU time of this whole process (every thread: both nodes when they share it) over the same
  // span: what the requests cost, whatever else the machine runs meanwhile.
  double cpu_s = 0;
  std::uint64_t heap_bytes = 0;  // heap per held request
  std::uint64_t rss_bytes = 0;   // resident set per held request
  std::int64_t retained_bytes = 0;  // heap per request still held once all ended
  bool all_resolved = true;         // every handle terminal and released in time

  double seconds() const { return post_s + resolve_s + release_s; }
};

struct hold_result {
  std::uint32_t requests = 0;
  hold_side send, recv;
  bool heap_known = true;  // false under a sanitizer's allocator, which malloc statistics miss
  bool stayed_healthy = true;  // health() never turned unhealthy during the hold

  // Microseconds per request, posting to release, sends and receives together.
  double us_per_request() const {
    return requests == 0 ? 0 : (send.seconds() + recv.seconds()) * 1e6 / (2.0 * requests);
  }
  // The same in CPU time of the process.
  double cpu_us_per_request() const {
    return requests == 0 ? 0 : (send.cpu_s + recv.cpu_s) * 1e6 / (2.0 * requests);
  }
};

// Holds `count` sends and then `count` receives (from `peer`, for ids it never offers) on `n`,
// each of one 4 KiB block of `region` (at least 1 MiB), then cancels them from
// `cancel_threads` threads at once (an engine aborting from several threads). Leaves nothing in
// flight behind.
hold_result measure_hold(node& n, peer_id peer, region_id region, std::uint32_t count,
                         unsigned cancel_threads = 1);

// Time per request at the largest size divided by that at the smallest (1 for one size): wall
// time by default, or CPU time (&hold_result::cpu_us_per_request), which other work on the
// machine leaves alone.
double hold_slope(const std::vector<hold_result>& results,
                  double (hold_result::*per_request)() const = &hold_result::us_per_request);

}  // namespace kvferry::bench
