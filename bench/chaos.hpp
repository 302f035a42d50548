// kvferry chaos (F16): a burst at concurrency N with a mix of request sizes, client cancels at
// random moments, too-short deadlines, optionally a SIGKILL of the prefill process mid-burst
// and its restart; then an idle window; then probe transfers that must all succeed. Reports
// the outcome counts and the invariants. No CAF here.
#pragma once

#include <cstdint>
#include <string>

namespace kvferry::bench {

struct chaos_options {
  std::uint32_t concurrency = 32;
  std::uint32_t requests = 512;        // in the burst
  double cancel_share = 0.2;           // of the burst's requests, cancelled at a random moment
  double short_deadline_share = 0.1;   // of the burst's requests, given a 1..5 ms deadline
  bool kill_peer = false;              // SIGKILL the prefill process mid-burst, then restart it
  std::uint32_t idle_ms = 1000;        // after the burst, before the probes
  std::uint32_t probes = 5;
  std::uint64_t seed = 1;              // makes a run reproducible (the choices, not the timing)
  std::string transport = "shm";
  bool json = false;
};

// Exit status: 0 when every invariant held (each handle resolved exactly once, nothing
// unreleased without being counted, every probe succeeded), 1 otherwise.
int run_chaos(const chaos_options& opts);

}  // namespace kvferry::bench
