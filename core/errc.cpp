#include "kvferry/errc.hpp"

namespace kvferry {

const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::none: return "none";
    case errc::cancelled: return "cancelled";
    case errc::timed_out: return "timed_out";
    case errc::peer_unreachable: return "peer_unreachable";
    case errc::peer_failed: return "peer_failed";
    case errc::transport_error: return "transport_error";
    case errc::out_of_memory: return "out_of_memory";
    case errc::invalid_argument: return "invalid_argument";
    case errc::unsupported: return "unsupported";
    case errc::duplicate_request_id: return "duplicate_request_id";
    case errc::unknown_request_id: return "unknown_request_id";
    case errc::out_of_range: return "out_of_range";
    case errc::size_mismatch: return "size_mismatch";
    case errc::unknown_region: return "unknown_region";
    case errc::not_connected: return "not_connected";
    case errc::stale_epoch: return "stale_epoch";
    case errc::malformed_message: return "malformed_message";
    case errc::backend_unhealthy: return "backend_unhealthy";
    case errc::stopped: return "stopped";
    case errc::internal_error: return "internal_error";
    case errc::incompatible_peer: return "incompatible_peer";
    case errc::limit_exceeded: return "limit_exceeded";
  }
  return "unknown";
}

}  // namespace kvferry
