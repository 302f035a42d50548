// kvferry/health.hpp — what a node reports about itself (node::health()). Standard library only.
#pragma once

#include <cstdint>
#include <string>

namespace kvferry {

struct health_snapshot {
  // False while the supervisor's restart budget is spent, while no request reached a terminal
  // state for progress_deadline_ms with work pending (true again once one does), or while the
  // quarantine budget is full.
  bool healthy = true;
  bool stalled = false;               // the global progress deadline is exceeded right now
  std::uint64_t ms_since_progress = 0;  // since a request last reached a terminal state
  std::uint64_t in_flight = 0;    // requests not yet terminal
  std::uint64_t succeeded = 0;
  std::uint64_t failed = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t unreleased = 0;   // terminal requests whose memory is not (yet) released:
                                  // quarantined until the transport proves quiescence
  std::uint64_t poisoned = 0;     // staging slots taken out of service
  bool quarantine_full = false;   // unreleased + poisoned reached quarantine_budget
  std::uint64_t restarts = 0;     // child actors restarted by the supervisor
  std::uint64_t worker_replacements = 0;  // wedged UCX workers replaced (transport/wedge_detector.hpp)
  std::uint64_t bytes_sent = 0;   // bytes this node put to peers
  std::uint64_t bytes_received = 0;
  std::string to_string() const;  // one line, e.g. for the demo's summary
};

}  // namespace kvferry
