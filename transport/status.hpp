// The one place where UCX status codes become kvferry error codes.
#pragma once

#include "kvferry/errc.hpp"

#include <ucs/type/status.h>

namespace kvferry::transport {

// Translates a UCX status. UCS_OK and UCS_INPROGRESS map to errc::none; every error maps to the
// code naming the largest entity it affects (operation: cancelled/timed_out; endpoint:
// peer_failed/peer_unreachable; resources: out_of_memory; anything else: transport_error).
errc translate(ucs_status_t status) noexcept;

}  // namespace kvferry::transport
