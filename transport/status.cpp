// UCX groups its error codes by the largest entity a failure affects: an operation, an
// endpoint (the peer), a link, or local resources. kvferry keeps the same split, because the
// owner of a request reacts differently to each: retry or give up on one operation, drop the
// peer, or report the node unhealthy.
#include "transport/status.hpp"

namespace kvferry::transport {

errc translate(ucs_status_t status) noexcept {
  switch (status) {
    case UCS_OK:
    case UCS_INPROGRESS:
      return errc::none;

    // One operation.
    case UCS_ERR_CANCELED:
      return errc::cancelled;
    case UCS_ERR_TIMED_OUT:
      return errc::timed_out;

    // The peer could not be reached: no endpoint was ever usable.
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_INVALID_ADDR:
    case UCS_ERR_SOME_CONNECTS_FAILED:
    case UCS_ERR_REJECTED:
      return errc::peer_unreachable;

    // An endpoint that existed failed: the peer died, reset the connection, stopped answering.
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_ENDPOINT_TIMEOUT:
      return errc::peer_failed;

    // Local resources.
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
      return errc::out_of_memory;

    case UCS_ERR_INVALID_PARAM:
      return errc::invalid_argument;
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NOT_IMPLEMENTED:
      return errc::unsupported;

    default:
      break;
  }
  // Whole ranges: a failed link or endpoint takes the peer with it.
  if (UCS_IS_LINK_ERROR(status) || UCS_IS_ENDPOINT_ERROR(status)) {
    return errc::peer_failed;
  }
  return errc::transport_error;
}

}  // namespace kvferry::transport
