// kvferry's error codes: one enum for every layer. The transport translates UCX status into it
// (transport/status.hpp), the actors register it with CAF (actors/messages.hpp) so it crosses
// the network, and the engine-facing API reports it in transfer results.
#pragma once

#include <cstdint>

namespace kvferry {

enum class errc : std::uint8_t {
  none = 0,
  cancelled,             // the operation was cancelled on request
  timed_out,             // a deadline or bounded wait expired
  peer_unreachable,      // no route / endpoint could not be created
  peer_failed,           // the peer endpoint reported an error (peer died, connection reset)
  transport_error,       // any other transport failure (I/O error, message truncated, ...)
  out_of_memory,         // allocation or memory registration failed
  invalid_argument,      // a caller passed something malformed
  unsupported,           // the requested feature is not available in this build/platform
  duplicate_request_id,  // a request id that is already in use on this node
  unknown_request_id,    // a request id this node does not know
  out_of_range,          // a block range outside its registered region
  size_mismatch,         // source and destination block sizes differ
  unknown_region,        // a region id that was never registered (or already removed)
  not_connected,         // the named peer is not connected
  stale_epoch,           // a message or endpoint from an earlier incarnation of a node
  malformed_message,     // a remote message that fails validation
  backend_unhealthy,     // the node cannot serve (transport down, restarting)
  stopped,               // the node is stopping or stopped
  internal_error,        // a bug or an exception caught at an actor boundary
  incompatible_peer,     // the peer declares another layout tag (node_config::layout_tag)
  limit_exceeded,        // a configured bound was reached (ids, blocks, parked fetches...)
};

// Stable lower-case name of a code ("timed_out"); "unknown" for values outside the enum.
const char* to_string(errc code) noexcept;

}  // namespace kvferry
