// The names of the public data model's values (errors, statuses, cancel results, health).
#include "kvferry/health.hpp"
#include "kvferry/transfer.hpp"

namespace kvferry {

const char* to_string(transfer_status s) noexcept {
  switch (s) {
    case transfer_status::pending: return "pending";
    case transfer_status::in_flight: return "in_flight";
    case transfer_status::succeeded: return "succeeded";
    case transfer_status::failed: return "failed";
    case transfer_status::cancelled: return "cancelled";
  }
  return "unknown";
}

const char* to_string(cancel_result r) noexcept {
  switch (r) {
    case cancel_result::not_found: return "not_found";
    case cancel_result::already_complete: return "already_complete";
    case cancel_result::cancelled_before_advertise: return "cancelled_before_advertise";
    case cancel_result::cancel_requested_in_flight: return "cancel_requested_in_flight";
    case cancel_result::backend_unhealthy: return "backend_unhealthy";
    case cancel_result::not_cancellable: return "not_cancellable";
  }
  return "unknown";
}

std::string health_snapshot::to_string() const {
  return std::string{healthy ? "healthy" : "UNHEALTHY"} + " in_flight=" +
         std::to_string(in_flight) + " succeeded=" + std::to_string(succeeded) +
         " failed=" + std::to_string(failed) + " cancelled=" + std::to_string(cancelled) +
         " unreleased=" + std::to_string(unreleased) + " poisoned=" + std::to_string(poisoned) +
         " parked_fetches=" + std::to_string(parked_fetches) +
         " peers=" + std::to_string(peers) +
         " restarts=" + std::to_string(restarts) +
         " worker_replacements=" + std::to_string(worker_replacements) +
         " writes_refused=" + std::to_string(writes_refused) +
         " lost_wakeups=" + std::to_string(lost_wakeups) +
         " ms_since_progress=" + std::to_string(ms_since_progress) +
         " tls_refused=" + std::to_string(tls_refused) +
         (reason.empty() ? std::string{} : " reason=\"" + reason + "\"");
}

}  // namespace kvferry
