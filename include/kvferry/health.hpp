// kvferry/health.hpp — what a node reports about itself (node::health()). Standard library only.
#pragma once

#include <cstdint>
#include <string>

namespace kvferry {

struct health_snapshot {
  // False while the supervisor's restart budget is spent, while transfers are moving through
  // this node and none progressed (ended, or had a copy or put batch answered) for
  // progress_deadline_ms (true again once one does), or while the quarantine budget is full.
  // Requests waiting for a peer (a send nobody fetched yet, a receive whose sender has not
  // offered it) are not moving: any number of them leaves a node healthy.
  // Also false while CAF's network thread has not run the supervisor's probe for
  // network_stall_ms (network_stalled).
  bool healthy = true;
  std::string reason;                 // why healthy is false, in words; empty while healthy
  bool stalled = false;               // the global progress deadline is exceeded right now
  std::uint64_t ms_since_progress = 0;  // since a request ended or a moving transfer stepped
  std::uint64_t in_flight = 0;    // requests not yet terminal
  std::uint64_t succeeded = 0;
  std::uint64_t failed = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t unreleased = 0;   // terminal requests whose memory is not (yet) released:
                                  // quarantined until the transport proves quiescence
  std::uint64_t poisoned = 0;     // staging slots taken out of service
  bool quarantine_full = false;   // unreleased + poisoned reached quarantine_budget
  std::uint64_t parked_fetches = 0;  // peers' fetches waiting for their send() (bounded by
                                     // max_parked_fetches and max_parked_fetches_per_peer)
  std::uint64_t peers = 0;  // peers connect() keeps an id for (dead and disconnected ones are
                            // forgotten; at most max_peers)
  bool network_stalled = false;       // the network thread is not running (see healthy)
  std::uint64_t tls_refused = 0;      // TLS peers refused: certificate, version, tls_allow,
                                      // or a handshake too slow or one too many pending
  std::uint64_t restarts = 0;     // child actors restarted by the supervisor
  std::uint64_t worker_replacements = 0;  // wedged UCX workers replaced (transport/wedge_detector.hpp)
  std::uint64_t writes_refused = 0;  // peers' data messages refused: no receive window of this
                                     // node open for them (late writes of ended receives, or
                                     // hostile ones); nothing of them was written
  std::uint64_t lost_wakeups = 0;  // times the transport found work no wake-up announced: a
                                   // shared-memory peer in another network namespace (a
                                   // container) cannot wake it, so it polls (F24)
  std::uint64_t bytes_sent = 0;   // bytes this node put to peers
  std::uint64_t bytes_received = 0;
  std::string to_string() const;  // one line, e.g. for the demo's summary
};

}  // namespace kvferry
